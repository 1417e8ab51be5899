"""The channel by which scenario results travel from the test run to the CLI, out of the
pipeline's reach.

The CLI makes a fresh random key for each certification and hands it to the pytest run over an
inherited pipe (never argv, never the environment); xdist passes it on to its workers over
their own channel. Every record is one JSON line ``{"kind", "body", "mac"}`` whose ``mac`` is
an HMAC-SHA256 of the canonical body under that key. The records live in a private directory
outside every sandbox (and hidden from it).

The CLI then checks completeness: the controller records the scenarios it collected, and
every collected scenario must have exactly one authenticated result. A missing, duplicate,
unauthenticated or malformed record is a harness error and the run is not certified: so a
worker that dies, or a pipeline that deletes or forges lines, is visible.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY_BYTES = 32
COLLECTION_GLOB = "collection-*.jsonl"
RESULTS_GLOB = "scenarios-*.jsonl"
#: A results file larger than this is not read (a result line is a few hundred KB at most).
MAX_FILE_BYTES = 256 * 1024 * 1024


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _canonical(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def seal(key: bytes, kind: str, body: Any) -> str:
    """One authenticated record, as a JSON line (without the newline)."""
    mac = hmac.new(key, kind.encode() + b"\0" + _canonical(body), hashlib.sha256).hexdigest()
    return json.dumps({"kind": kind, "body": body, "mac": mac}, sort_keys=True, default=str)


def append(path: Path, line: str) -> None:
    """Append one record with a single write (records of parallel writers never interleave)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dataclass
class ChannelContents:
    """What the CLI read back: authenticated results, the collected scenarios, and problems."""

    results: list[dict[str, Any]] = field(default_factory=list)
    collected: list[str] | None = None
    problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _open_records(path: Path) -> tuple[list[str], str | None]:
    """The lines of one records file; refuses links, non-regular and oversized files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        return [], f"{path.name}: cannot be opened safely ({exc.strerror})"
    try:
        stat = os.fstat(fd)
        if stat.st_mode & 0o170000 != 0o100000:
            return [], f"{path.name}: is not a regular file"
        if stat.st_size > MAX_FILE_BYTES:
            return [], f"{path.name}: is larger than {MAX_FILE_BYTES} bytes"
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace").splitlines(), None


def _verify(key: bytes, line: str) -> tuple[str, Any] | str:
    try:
        record = json.loads(line)
    except ValueError:
        return "a malformed record (not JSON)"
    if not isinstance(record, dict) or set(record) != {"kind", "body", "mac"}:
        return "a malformed record (wrong fields)"
    kind, body, mac = record["kind"], record["body"], record["mac"]
    if not isinstance(kind, str) or not isinstance(mac, str):
        return "a malformed record (wrong types)"
    expected = hmac.new(key, kind.encode() + b"\0" + _canonical(body), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, mac):
        return "a record that is not authenticated by this certification's key"
    return kind, body


def read_channel(
    directory: Path, key: bytes, validate: Callable[[Any], Any] | None = None
) -> ChannelContents:
    """Read every record back, authenticate it, and check that the results are complete.

    Each test process records the scenarios it collected (``collection-*.jsonl``: xdist
    workers each collect the whole suite); they must agree. Each result names its node.
    """
    contents = ChannelContents()
    collections: list[list[dict[str, Any]]] = []
    by_node: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob(COLLECTION_GLOB)) + sorted(directory.glob(RESULTS_GLOB)):
        lines, problem = _open_records(path)
        if problem:
            contents.problems.append(f"harness error: results channel: {problem}")
            continue
        expected_kind = "collection" if path.name.startswith("collection-") else "result"
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            verified = _verify(key, line)
            if isinstance(verified, str):
                contents.problems.append(
                    f"harness error: results channel: {path.name} line {number} is {verified}"
                )
                continue
            kind, body = verified
            if kind != expected_kind:
                contents.problems.append(
                    f"harness error: results channel: {path.name} line {number} is an "
                    f"unexpected {kind!r} record"
                )
            elif kind == "collection" and isinstance(body, list):
                collections.append([b for b in body if isinstance(b, dict) and "nodeid" in b])
            elif kind == "result" and isinstance(body, dict) and "nodeid" in body:
                nodeid = str(body["nodeid"])
                if validate is not None:
                    try:
                        validate(body)
                    except ValueError as exc:
                        contents.problems.append(
                            f"harness error: results channel: the result for {nodeid} is "
                            f"malformed: {exc}"
                        )
                        continue
                if nodeid in by_node:
                    contents.problems.append(
                        f"harness error: results channel: two results for {nodeid}"
                    )
                    continue
                by_node[nodeid] = body
            else:
                contents.problems.append(
                    f"harness error: results channel: {path.name} line {number} is malformed"
                )
    if not collections:
        contents.problems.append(
            "harness error: results channel: no test process recorded what it collected"
        )
        contents.results = list(by_node.values())
        return contents
    first = collections[0]
    if any([c["nodeid"] for c in other] != [c["nodeid"] for c in first] for other in collections):
        contents.problems.append(
            "harness error: results channel: the test processes collected different scenarios"
        )
    contents.collected = [str(c["nodeid"]) for c in first]
    collected = set(contents.collected)
    for nodeid in sorted(set(by_node) - collected):
        contents.problems.append(
            f"harness error: results channel: a result for {nodeid}, which was never collected"
        )
    contents.missing = [n for n in contents.collected if n not in by_node]
    for entry in first:
        if entry["nodeid"] in by_node:
            contents.results.append(by_node[entry["nodeid"]])
        else:
            contents.problems.append(
                f"harness error: no result for {entry.get('check_id') or entry['nodeid']} "
                "(its worker died or its result was lost)"
            )
            contents.results.append(missing_result(entry))
    return contents


def missing_result(entry: dict[str, Any]) -> dict[str, Any]:
    """The ``error`` row a collected scenario gets when its result never arrived."""
    fallback = "unknown/" + (
        re.sub(r"[^a-z0-9]+", "-", str(entry["nodeid"]).lower()).strip("-") or "scenario"
    )
    return {
        "check_id": entry.get("check_id") or fallback,
        "guarantee": entry.get("guarantee") or "unknown",
        "feature_file": entry.get("feature_file"),
        "name": entry.get("name") or entry["nodeid"],
        "example": entry.get("example"),
        "kind": entry.get("kind") or "required",
        "verdict": "error",
        "message": "harness error: no result arrived for this scenario (its worker died, "
        "was killed, or its result was lost)",
        "skip_kind": None,
        "duration_s": 0.0,
        "steps": [],
        "findings": [],
        "evidence": {},
        "nodeid": entry["nodeid"],
    }
