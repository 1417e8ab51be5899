"""The evidence bundle: every report and every scenario's raw evidence, with a manifest of
digests, optionally signed with Ed25519, and a verifier that names any file that changed.

Layout (a directory, or the same under one top folder in a ``.tar.gz``)::

    MANIFEST              sha256 of every other file, in ``sha256sum`` format
    MANIFEST.sig          Ed25519 signature of MANIFEST's bytes (raw 64 bytes; when signed)
    MANIFEST.pub          the signer's public key, PEM (when signed; listed in MANIFEST)
    report.json report.html report.md junit.xml cucumber.json
    profile.toml          the profile as given, secrets masked
    logs/pytest.log       the certification run's pytest output, secrets masked
    evidence/index.json   check ID -> folder, verdict
    evidence/<check-id-slug>/scenario.json        verdict, findings, steps (no evidence)
    evidence/<check-id-slug>/<evidence-key>.json  http.json, runs.json, lineage_events.json,
                                                  spans.json, crash_points.json, ...

``sha256sum -c MANIFEST`` and ``openssl pkeyutl -verify -pubin -inkey PUB.pem -rawin -in
MANIFEST -sigfile MANIFEST.sig`` check a bundle without this tool.

"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from kfm_conformance.verdict import ConfigurationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from kfm_conformance.redact import Redactor

MANIFEST = "MANIFEST"
SIGNATURE = "MANIFEST.sig"
PUBLIC_KEY = "MANIFEST.pub"
#: Files at the top of a bundle that MANIFEST itself cannot list.
UNLISTED = frozenset({MANIFEST, SIGNATURE})
#: Environment variable holding the passphrase of an encrypted signing key.
PASSPHRASE_ENV = "KFM_SIGN_KEY_PASSPHRASE"
#: Report files copied from the report directory, when present.
REPORT_FILES = ("report.json", "report.html", "report.md", "junit.xml", "cucumber.json")

_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64})  (.+)$")


def is_archive(path: Path | str) -> bool:
    return str(path).endswith((".tar.gz", ".tgz"))


# -- check IDs as folder names -----------------------------------------------------------------
def check_slug(check_id: str) -> str:
    """A folder name for a check ID: ``[A-Za-z0-9._-]`` only, at most 120 characters."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", check_id.replace("/", "--")).strip("-.")
    if len(slug) > 120 or not slug:
        digest = hashlib.sha256(check_id.encode()).hexdigest()[:10]
        slug = f"{slug[:108].rstrip('-.')}-{digest}"
    return slug


# -- keys --------------------------------------------------------------------------------------
def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (if encrypted, the passphrase is in
    ``$KFM_SIGN_KEY_PASSPHRASE``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    location = Path(path)
    try:
        data = location.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"--sign-key: cannot read {location}: {exc.strerror}") from None
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(
            data, password=passphrase.encode() if passphrase else None
        )
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"--sign-key: {location} is not a usable PEM private key ({exc})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"--sign-key: {location} is not an Ed25519 key")
    return key


def load_public_key(data: bytes, origin: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{origin}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"{origin}: not an Ed25519 public key")
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(key: Ed25519PublicKey) -> str:
    """``sha256:`` of the raw 32-byte public key."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def key_paths(out: Path | str) -> tuple[Path, Path]:
    """``keygen OUT`` writes ``OUT.pem`` (private) and ``OUT.pub.pem`` (public)."""
    base = str(out).removesuffix(".pem")
    return Path(base + ".pem"), Path(base + ".pub.pem")


def keygen(out: Path | str) -> tuple[Path, Path, str]:
    """Write a new Ed25519 key pair; never overwrites. Returns the paths and the fingerprint."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = key_paths(out)
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigurationError(f"keygen: {path} exists; not overwriting a key")
        if not path.parent.is_dir():
            raise ConfigurationError(f"keygen: no such directory: {path.parent}")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(public_pem(key.public_key()))
    return private_path, public_path, fingerprint(key.public_key())


# -- writing -----------------------------------------------------------------------------------
def check_target(out: Path) -> None:
    """Refuse, before any work, a bundle target that would overwrite something else."""
    if is_archive(out):
        if out.is_dir():
            raise ConfigurationError(f"--bundle: {out} is a directory")
        if not out.parent.is_dir():
            raise ConfigurationError(f"--bundle: no such directory: {out.parent}")
        return
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--bundle: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ConfigurationError(f"--bundle: {out} is a non-empty directory that is not a bundle")


def evidence_files(data: dict[str, Any]) -> dict[str, Any]:
    """Each scenario's evidence split into files: ``evidence/<slug>/<key>.json``."""
    files: dict[str, Any] = {}
    index = []
    used: set[str] = set()
    for row in data.get("guarantees", []):
        for scenario in row.get("scenarios", []):
            check_id = str(scenario.get("check_id", ""))
            slug = check_slug(check_id)
            if slug in used:  # two IDs with one slug: tell them apart
                slug = f"{slug}-{hashlib.sha256(check_id.encode()).hexdigest()[:8]}"
            used.add(slug)
            folder = f"evidence/{slug}"
            index.append({"check_id": check_id, "verdict": scenario.get("verdict"), "dir": folder})
            evidence = dict(scenario.get("evidence") or {})
            files[f"{folder}/scenario.json"] = {
                k: v for k, v in scenario.items() if k != "evidence"
            }
            observability = evidence.pop("observability", None)
            if isinstance(observability, dict):
                runs = observability.get("runs") or []
                events = [
                    {"run": r.get("label"), **rec}
                    for r in runs
                    if isinstance(r, dict)
                    for rec in r.get("lineage") or []
                    if isinstance(rec, dict)
                ]
                traces = [
                    {"run": r.get("label"), "document": doc}
                    for r in runs
                    if isinstance(r, dict)
                    for doc in r.get("traces") or []
                ]
                if events:
                    files[f"{folder}/lineage_events.json"] = events
                if traces:
                    files[f"{folder}/otlp_traces.json"] = traces
                files[f"{folder}/observability.json"] = observability
            for key, value in evidence.items():
                name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(key)) or "evidence"
                path = f"{folder}/{name}.json"
                if path in files:
                    path = f"{folder}/{name}-evidence.json"
                files[path] = value
    files["evidence/index.json"] = index
    return files


def manifest_text(root: Path) -> bytes:
    """``sha256  path`` for every file under ``root`` except MANIFEST and its signature."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in UNLISTED:
            continue
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {rel}\n")
    return "".join(lines).encode()


def write_bundle(
    out: Path,
    report_dir: Path,
    data: dict[str, Any],
    *,
    redactor: Redactor,
    profile_path: Path | None = None,
    sign_key: Ed25519PrivateKey | None = None,
) -> Path:
    """Assemble the bundle from a report directory (reports already written and redacted)."""
    from kfm_conformance.report.writers import redact_file

    out = Path(out)
    check_target(out)
    parent = out.parent if out.parent != Path("") else Path(".")
    with tempfile.TemporaryDirectory(prefix=".kfm-bundle-", dir=parent) as tmp:
        stage = Path(tmp) / _archive_root(out)
        stage.mkdir()
        for name in REPORT_FILES:
            if (report_dir / name).is_file():
                shutil.copyfile(report_dir / name, stage / name)
        if (report_dir / "pytest.log").is_file():
            (stage / "logs").mkdir()
            shutil.copyfile(report_dir / "pytest.log", stage / "logs" / "pytest.log")
        if profile_path is not None and profile_path.is_file():
            shutil.copyfile(profile_path, stage / "profile.toml")
        for rel, value in evidence_files(data).items():
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(
                json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n",
                encoding="utf-8",
            )
        # Belt and braces: whatever wrote a file, no secret leaves in the bundle.
        for path in stage.rglob("*"):
            if path.is_file():
                redact_file(path, redactor)
        if sign_key is not None:
            (stage / PUBLIC_KEY).write_bytes(public_pem(sign_key.public_key()))
        manifest = manifest_text(stage)
        (stage / MANIFEST).write_bytes(manifest)
        if sign_key is not None:
            (stage / SIGNATURE).write_bytes(sign_key.sign(manifest))
        if is_archive(out):
            _write_tar(stage, out)
        else:
            if out.is_dir():
                shutil.rmtree(out)
            shutil.move(str(stage), str(out))
    return out


def _archive_root(out: Path) -> str:
    name = out.name
    for suffix in (".tar.gz", ".tgz"):
        name = name.removesuffix(suffix)
    return name or "kfm-bundle"


def _write_tar(stage: Path, out: Path) -> None:
    """A reproducible tar.gz: sorted members, no owners, fixed times."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = [stage, *sorted(stage.rglob("*"))]
        for path in paths:
            arcname = PurePosixPath(stage.name) / path.relative_to(stage).as_posix()
            info = tarfile.TarInfo(arcname.as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data = path.read_bytes()
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buffer.getvalue())
    os.replace(tmp, out)


# -- verifying ---------------------------------------------------------------------------------
@dataclass
class Verification:
    """The outcome of :func:`verify_bundle`: ``ok`` only when ``problems`` is empty."""

    files: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signer: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def read_bundle(path: Path) -> tuple[dict[str, bytes], list[str]]:
    """Every regular file of a bundle (directory or tar.gz) by relative path, and problems
    with its shape (links, devices, paths outside it)."""
    problems: list[str] = []
    files: dict[str, bytes] = {}
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            for name in sorted(dirnames + filenames):
                full = Path(dirpath) / name
                rel = full.relative_to(path).as_posix()
                if full.is_symlink():
                    problems.append(f"{rel}: a symbolic link (not allowed in a bundle)")
                elif full.is_file():
                    files[rel] = full.read_bytes()
                elif not full.is_dir():
                    problems.append(f"{rel}: not a regular file")
        return files, problems
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = tar.getmembers()
            roots = {m.name.split("/", 1)[0] for m in members}
            if len(roots) != 1:
                problems.append(f"archive: expected one top folder, found {sorted(roots)}")
            for member in members:
                parts = member.name.split("/", 1)
                rel = parts[1] if len(parts) == 2 else ""
                if member.isdir():
                    continue
                if not rel or ".." in PurePosixPath(rel).parts or member.name.startswith("/"):
                    problems.append(f"{member.name}: a path outside the bundle")
                elif not member.isfile():
                    problems.append(f"{rel}: not a regular file")
                else:
                    handle = tar.extractfile(member)
                    if rel in files:
                        problems.append(f"{rel}: appears twice in the archive")
                    files[rel] = handle.read() if handle else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        problems.append(f"archive: cannot read ({exc})")
    return files, problems


def parse_manifest(text: bytes) -> tuple[dict[str, str], list[str]]:
    entries: dict[str, str] = {}
    problems: list[str] = []
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return {}, [f"{MANIFEST}: not UTF-8 text"]
    for number, line in enumerate(lines, 1):
        match = _MANIFEST_LINE.match(line)
        if not match:
            problems.append(f"{MANIFEST}: line {number} is not 'sha256  path'")
            continue
        digest, rel = match.groups()
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or rel in UNLISTED:
            problems.append(f"{MANIFEST}: line {number} names a path it may not list: {rel}")
        elif rel in entries:
            problems.append(f"{MANIFEST}: {rel} listed twice")
        else:
            entries[rel] = digest
    if not entries and not problems:
        problems.append(f"{MANIFEST}: empty")
    return entries, problems


def verify_bundle(path: Path, key_pem: bytes | None = None) -> Verification:
    """Check every digest in MANIFEST, that no file was added or removed, and the signature
    (against ``key_pem``, or else the key the bundle carries)."""
    result = Verification()
    files, result.problems = read_bundle(path)
    manifest = files.get(MANIFEST)
    if manifest is None:
        result.problems.append(f"{MANIFEST}: missing")
        return result
    entries, problems = parse_manifest(manifest)
    result.problems += problems
    for rel, digest in sorted(entries.items()):
        if rel not in files:
            result.problems.append(f"{rel}: listed in {MANIFEST} but missing")
        elif hashlib.sha256(files[rel]).hexdigest() != digest:
            result.problems.append(f"{rel}: modified (sha256 differs from {MANIFEST})")
    for rel in sorted(files):
        if rel not in entries and rel not in UNLISTED:
            result.problems.append(f"{rel}: added (not listed in {MANIFEST})")
    result.files = len(entries)
    result.problems += _check_signature(files, manifest, key_pem, result)
    return result


def _check_signature(
    files: dict[str, bytes], manifest: bytes, key_pem: bytes | None, result: Verification
) -> list[str]:
    from cryptography.exceptions import InvalidSignature

    signature = files.get(SIGNATURE)
    if signature is None:
        if key_pem is not None:
            return [f"{SIGNATURE}: missing, but a key was given: the bundle is not signed"]
        if PUBLIC_KEY in files:
            return [f"{SIGNATURE}: missing, but the bundle names a signer ({PUBLIC_KEY})"]
        result.notes.append("not signed: the digests show integrity, not who made the bundle")
        return []
    if key_pem is not None:
        key = load_public_key(key_pem, "--key")
        source = "the given key"
    elif PUBLIC_KEY in files:
        try:
            key = load_public_key(files[PUBLIC_KEY], PUBLIC_KEY)
        except ConfigurationError as exc:
            return [str(exc)]
        source = f"the key in the bundle ({PUBLIC_KEY}); pass --key to check who signed"
    else:
        return [f"{SIGNATURE}: present, but no public key to check it (pass --key PUB.pem)"]
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        return [f"{SIGNATURE}: does not match {MANIFEST} under {fingerprint(key)} ({source})"]
    result.signer = fingerprint(key)
    result.notes.append(f"signature good: {fingerprint(key)}, checked with {source}")
    return []
