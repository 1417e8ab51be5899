"""A small, typed client of the lakeFS REST API (``/api/v1``, HTTP basic auth).

The harness judges promotion from the outside with these calls only; it never uses the
pipeline's SDK. Every failure to talk to lakeFS (no answer, a 5xx, an unexpected status) is a
:class:`~.base.ServiceError` for ``lakefs``: infrastructure, never the pipeline's fault. A 404
on a read means "not there" and is returned as ``None``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

from .base import LakeFSAccess, ServiceError

__all__ = ["Commit", "LakeFSAPI", "ObjectStat"]


@dataclass(frozen=True)
class Commit:
    id: str
    parents: tuple[str, ...]
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Commit:
        return cls(
            id=str(data["id"]),
            parents=tuple(str(p) for p in data.get("parents") or ()),
            message=str(data.get("message", "")),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parents": list(self.parents),
            "message": self.message,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True)
class ObjectStat:
    path: str
    checksum: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObjectStat:
        return cls(
            path=str(data["path"]),
            checksum=str(data.get("checksum", "")),
            size=int(data.get("size_bytes") or 0),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        )


class LakeFSAPI:
    """lakeFS at ``access`` (see the module docstring)."""

    def __init__(self, access: LakeFSAccess, *, timeout_s: float = 30.0) -> None:
        self.access = access
        self.base = access.api_base
        self.timeout_s = timeout_s
        self.http = requests.Session()
        self.http.auth = (access.access_key_id, access.secret_access_key)

    def __repr__(self) -> str:
        return f"LakeFSAPI({self.access.endpoint!r})"

    # -- plumbing --------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        missing_ok: bool = False,
        **kw: Any,
    ) -> requests.Response | None:
        try:
            response = self.http.request(method, self.base + path, timeout=self.timeout_s, **kw)
        except requests.RequestException as exc:
            raise ServiceError(
                f"{method} {path} got no answer: {type(exc).__name__}", service="lakefs"
            ) from exc
        if response.status_code in ok:
            return response
        if missing_ok and response.status_code == 404:
            return None
        raise ServiceError(
            f"{method} {path} answered {response.status_code}: {response.text[:300]}",
            service="lakefs",
        )

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = self._call(method, path, **kw)
        return None if response is None else response.json()

    def _pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        after = ""
        while True:
            page = self._json("GET", path, params={**params, "after": after, "amount": 1000})
            yield from page.get("results", [])
            pagination = page.get("pagination") or {}
            if not pagination.get("has_more"):
                return
            after = pagination.get("next_offset", "")

    # -- server ----------------------------------------------------------------------------
    def version(self) -> str:
        data = self._json("GET", "/config/version")
        return str(data.get("version", "unknown"))

    # -- repositories and branches ---------------------------------------------------------
    def create_repository(self, name: str, storage_namespace: str, branch: str = "main") -> None:
        self._call(
            "POST",
            "/repositories",
            ok=(201,),
            json={"name": name, "storage_namespace": storage_namespace, "default_branch": branch},
        )

    def delete_repository(self, name: str) -> None:
        self._call("DELETE", f"/repositories/{name}", ok=(204,), missing_ok=True)

    def branches(self, repo: str) -> dict[str, str]:
        """Every branch and its head commit."""
        return {
            str(b["id"]): str(b["commit_id"]) for b in self._pages(f"/repositories/{repo}/branches")
        }

    def head(self, repo: str, branch: str) -> str:
        data = self._json("GET", f"/repositories/{repo}/branches/{branch}")
        return str(data["commit_id"])

    def commit(self, repo: str, commit_id: str) -> Commit:
        return Commit.from_json(self._json("GET", f"/repositories/{repo}/commits/{commit_id}"))

    def uncommitted(self, repo: str, branch: str) -> list[dict[str, Any]]:
        """The branch's staged, uncommitted changes (path, type, size)."""
        return [
            {"path": c.get("path"), "type": c.get("type"), "size": c.get("size_bytes")}
            for c in self._pages(f"/repositories/{repo}/branches/{branch}/diff")
        ]

    def revert(self, repo: str, branch: str, commit_id: str, parent_number: int) -> None:
        self._call(
            "POST",
            f"/repositories/{repo}/branches/{branch}/revert",
            ok=(204, 200),
            json={"ref": commit_id, "parent_number": parent_number},
        )

    # -- objects ---------------------------------------------------------------------------
    def stat(self, repo: str, ref: str, path: str) -> ObjectStat | None:
        data = self._json(
            "GET",
            f"/repositories/{repo}/refs/{ref}/objects/stat",
            params={"path": path, "user_metadata": "true"},
            missing_ok=True,
        )
        return None if data is None else ObjectStat.from_json(data)

    def get(self, repo: str, ref: str, path: str) -> bytes | None:
        response = self._call(
            "GET",
            f"/repositories/{repo}/refs/{ref}/objects",
            params={"path": path},
            missing_ok=True,
        )
        return None if response is None else response.content

    def listing(self, repo: str, ref: str) -> dict[str, str]:
        """Every object at ``ref``: path -> checksum."""
        return {
            str(o["path"]): str(o.get("checksum", ""))
            for o in self._pages(f"/repositories/{repo}/refs/{ref}/objects/ls", prefix="")
            if o.get("path_type", "object") == "object"
        }

    def sha256(self, repo: str, ref: str, path: str) -> str | None:
        data = self.get(repo, ref, path)
        return None if data is None else hashlib.sha256(data).hexdigest()
