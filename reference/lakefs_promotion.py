"""Branch-based promotion of the reference pipeline's output into lakeFS (``lakefs`` SDK).

Active only when the environment names a lakeFS endpoint and repository; otherwise the
pipeline publishes locally only, exactly as before. Called after the local durable
publication (output and sidecars in place) and before the run-state is written, so a
promotion that fails leaves the state describing the previous version and the next run
promotes again.

The flow, for the output and its provenance sidecars:

1. **Unchanged?** Every file's sha256 is compared with the ``sha256`` user metadata of the
   object at its path on the target branch. All equal: nothing is written, no commit is
   made (idempotency carries over to lakeFS).
2. **Run branch** ``kfm-run-<run id>`` is created from the target branch's head commit.
3. **Upload** each file to the run branch (with its sha256 as user metadata) and **commit**
   (the run id, the output's sha256 and row count as commit metadata).
4. **Validate** from the commit: each object is read back and its sha256 compared; a
   Parquet output's row count is read from its footer and compared.
5. **Merge** the run branch into the target: one atomic merge commit, so the target shows
   the old version or the new one, never a mix. Then the run branch is deleted.

Any failure deletes the run branch (best effort) and raises :class:`PromotionError`, an
``OSError``, which the pipeline reports as ``io_error`` (74).

Environment: ``LAKEFS_ENDPOINT``, ``LAKEFS_ACCESS_KEY_ID``, ``LAKEFS_SECRET_ACCESS_KEY``,
``LAKEFS_REPOSITORY``, ``LAKEFS_BRANCH`` (default ``main``), ``KFM_LAKEFS_PATH`` (the output's
object path; default: the output path as configured, e.g. ``out/data.parquet``; sidecars go
beside it).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENDPOINT_ENV = "LAKEFS_ENDPOINT"
ACCESS_KEY_ENV = "LAKEFS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "LAKEFS_SECRET_ACCESS_KEY"
REPOSITORY_ENV = "LAKEFS_REPOSITORY"
BRANCH_ENV = "LAKEFS_BRANCH"
PATH_ENV = "KFM_LAKEFS_PATH"
SHA_KEY = "sha256"
SOCKET_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


class PromotionError(OSError):
    """The promotion to lakeFS failed; the target branch was not changed by this run."""


@dataclass(frozen=True)
class Target:
    endpoint: str
    access_key_id: str
    secret_access_key: str
    repository: str
    branch: str
    output_path: str | None


def target_from_env(env: Mapping[str, str]) -> Target | None:
    """The lakeFS target the environment names, or None when promotion is not configured."""
    endpoint, repository = env.get(ENDPOINT_ENV, ""), env.get(REPOSITORY_ENV, "")
    if not endpoint or not repository:
        return None
    return Target(
        endpoint=endpoint.rstrip("/"),
        access_key_id=env.get(ACCESS_KEY_ENV, ""),
        secret_access_key=env.get(SECRET_KEY_ENV, ""),
        repository=repository,
        branch=env.get(BRANCH_ENV) or "main",
        output_path=env.get(PATH_ENV) or None,
    )


def _sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def object_paths(output: str, output_display: str, sidecars: list[str], target: Target) -> dict:
    """Local file -> object path: the output at its path, sidecars beside it."""
    main = (target.output_path or output_display).lstrip("/")
    folder = posixpath.dirname(main)
    paths = {output: main}
    for sidecar in sidecars:
        paths[sidecar] = posixpath.join(folder, os.path.basename(sidecar))
    return paths


def promote(
    *,
    output: str,
    output_display: str,
    sidecars: list[str],
    sha256: str,
    rows: int,
    run_id: str,
    env: Mapping[str, str],
) -> str | None:
    """Promote the published files to the target branch (see the module docstring).

    Returns the merge commit id, ``"unchanged"`` when the target already holds these
    files, or None when lakeFS is not configured.
    """
    target = target_from_env(env)
    if target is None:
        return None
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(SOCKET_TIMEOUT_S)
    try:
        return _promote(target, output, output_display, sidecars, sha256, rows, run_id)
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _promote(
    target: Target,
    output: str,
    output_display: str,
    sidecars: list[str],
    sha256: str,
    rows: int,
    run_id: str,
) -> str:
    try:
        import lakefs
        from lakefs.exceptions import LakeFSException
    except ImportError as exc:  # pragma: no cover - the reference extra installs it
        raise PromotionError(
            f"lakeFS is configured but the `lakefs` SDK is missing: {exc}"
        ) from None

    files = object_paths(output, output_display, [s for s in sidecars if os.path.exists(s)], target)
    digests = {local: (sha256 if local == output else _sha256(local)) for local in files}
    client = lakefs.Client(
        host=target.endpoint,
        username=target.access_key_id,
        password=target.secret_access_key,
    )
    repo = lakefs.Repository(target.repository, client=client)
    destination = repo.branch(target.branch)
    run_branch: Any = None
    stage = "reading the target branch"
    try:
        if _unchanged(destination, files, digests):
            return "unchanged"
        stage = "creating the run branch"
        base = destination.head.id
        run_branch = repo.branch(f"kfm-run-{run_id}").create(base)
        stage = "uploading"
        for local, path in files.items():
            with (
                open(local, "rb") as source,
                run_branch.object(path).writer(
                    mode="wb",
                    pre_sign=False,
                    content_type=_content_type(path),
                    metadata={SHA_KEY: digests[local]},
                ) as sink,
            ):
                while chunk := source.read(_CHUNK):
                    sink.write(chunk)
        stage = "committing"
        commit = run_branch.commit(
            message=f"kfm: {os.path.basename(output)} {sha256[:12]} ({rows} rows)",
            metadata={"kfm.run_id": run_id, "kfm.sha256": sha256, "kfm.rows": str(rows)},
        )
        stage = "validating"
        _validate(repo, commit.id, files, digests, output, rows)
        stage = "merging"
        merged = str(
            run_branch.merge_into(
                destination, message=f"kfm: promote run {run_id}", metadata={"kfm.run_id": run_id}
            )
        )
        stage = "deleting the run branch"
        with contextlib.suppress(LakeFSException, OSError):
            run_branch.delete()
        run_branch = None
        return merged
    except (LakeFSException, OSError, ValueError) as exc:
        if isinstance(exc, PromotionError):
            raise
        raise PromotionError(f"lakeFS promotion failed while {stage}: {_short(exc)}") from None
    finally:
        if run_branch is not None:
            with contextlib.suppress(Exception):
                run_branch.delete()


def _unchanged(destination: Any, files: dict[str, str], digests: dict[str, str]) -> bool:
    from lakefs.exceptions import NotFoundException

    for local, path in files.items():
        try:
            stat = destination.object(path).stat(pre_sign=False)
        except NotFoundException:
            return False
        if (stat.metadata or {}).get(SHA_KEY) != digests[local]:
            return False
    return True


def _validate(
    repo: Any,
    commit_id: str,
    files: dict[str, str],
    digests: dict[str, str],
    output: str,
    rows: int,
) -> None:
    ref = repo.ref(commit_id)
    for local, path in files.items():
        digest = hashlib.sha256()
        data = io.BytesIO() if local == output and output.endswith(".parquet") else None
        with ref.object(path).reader(mode="rb", pre_sign=False) as reader:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                if data is not None:
                    data.write(chunk)
        if digest.hexdigest() != digests[local]:
            raise PromotionError(f"validation failed: {path} read back with another sha256")
        if data is not None:
            import pyarrow.parquet as pq

            found = pq.ParquetFile(io.BytesIO(data.getvalue())).metadata.num_rows
            if found != rows:
                raise PromotionError(f"validation failed: {path} holds {found} rows, not {rows}")


def _content_type(path: str) -> str:
    if path.endswith(".parquet"):
        return "application/vnd.apache.parquet"
    if path.endswith((".json", ".jsonld")):
        return "application/json"
    return "application/octet-stream"


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"
