"""A strict structural matcher for expected-vs-actual JSON documents (OpenLineage events).

OpenLineage's own test helper ``match()`` compares only the first element of a list of named
dicts, so an event with a wrong second input passes. This matcher does not cut corners:

- a dict matches when every expected key is present in the actual dict and its value matches
  (extra actual keys are allowed);
- a list matches when every expected element is matched by a *distinct* actual element
  (a maximum bipartite matching, so order does not matter and one actual element never
  satisfies two expected ones); with ``exact_lists=True`` the lengths must also be equal;
- scalars match by equality and type family (``True`` does not match ``1``; ``1`` matches ``1.0``);
- :data:`ANY` matches anything present, and a callable matches when it returns True.

:func:`match` returns ``None`` or the first :class:`Mismatch`, with the JSON path in the
expected document where matching failed and, for a list element, the closest candidate's
own mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()
"""Matches any actual value (the key must still be present)."""


@dataclass(frozen=True)
class Mismatch:
    """Where and why the actual document does not match the expected one."""

    path: str
    reason: str
    expected: Any = None
    actual: Any = None
    closest: Mismatch | None = None

    def __str__(self) -> str:
        text = f"{self.path}: {self.reason}"
        if self.closest is not None:
            text += f" (closest: {self.closest})"
        return text

    @property
    def deepest(self) -> Mismatch:
        """The innermost mismatch along the ``closest`` chain."""
        return self.closest.deepest if self.closest is not None else self


def _scalar_equal(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    return type(expected) is type(actual) and bool(expected == actual)


def _depth(mismatch: Mismatch) -> int:
    return mismatch.deepest.path.count(".") + mismatch.deepest.path.count("[")


def match(
    expected: Any, actual: Any, *, exact_lists: bool = False, path: str = "$"
) -> Mismatch | None:
    """None when ``actual`` matches ``expected``, else the first :class:`Mismatch`."""
    if expected is ANY:
        return None
    if callable(expected) and not isinstance(expected, type):
        predicate: Callable[[Any], bool] = expected
        ok = False
        try:
            ok = bool(predicate(actual))
        except Exception:  # noqa: BLE001 - a predicate that raises simply does not match
            ok = False
        if ok:
            return None
        name = getattr(predicate, "__name__", repr(predicate))
        return Mismatch(path, f"value does not satisfy {name}", name, actual)
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return Mismatch(
                path, f"expected an object, got {type(actual).__name__}", expected, actual
            )
        for key, value in expected.items():
            child = f"{path}.{key}"
            if key not in actual:
                return Mismatch(child, "key is missing", value, None)
            found = match(value, actual[key], exact_lists=exact_lists, path=child)
            if found is not None:
                return found
        return None
    if isinstance(expected, list | tuple):
        if not isinstance(actual, list | tuple):
            return Mismatch(path, f"expected a list, got {type(actual).__name__}", expected, actual)
        return _match_list(list(expected), list(actual), exact_lists, path)
    if not _scalar_equal(expected, actual):
        return Mismatch(path, f"expected {expected!r}, got {actual!r}", expected, actual)
    return None


def _match_list(expected: list[Any], actual: list[Any], exact: bool, path: str) -> Mismatch | None:
    if exact and len(expected) != len(actual):
        return Mismatch(
            path,
            f"expected {len(expected)} elements, got {len(actual)}",
            len(expected),
            len(actual),
        )
    if len(actual) < len(expected):
        reason = f"expected at least {len(expected)} elements, got {len(actual)}"
        return Mismatch(path, reason, len(expected), len(actual))
    candidates: list[list[int]] = []
    for i, item in enumerate(expected):
        candidates.append(
            [
                j
                for j, other in enumerate(actual)
                if match(item, other, exact_lists=exact, path=f"{path}[{i}]") is None
            ]
        )
    owner: dict[int, int] = {}  # actual index -> expected index

    def augment(i: int, seen: set[int]) -> bool:
        for j in candidates[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(expected)):
        if augment(i, set()):
            continue
        element_path = f"{path}[{i}]"
        if candidates[i]:
            taken = ", ".join(str(j) for j in candidates[i])
            return Mismatch(
                element_path,
                f"every actual element that matches it (index {taken}) is already matched "
                "by another expected element",
                expected[i],
                None,
            )
        closest: Mismatch | None = None
        free = [j for j in range(len(actual)) if j not in owner]
        for j in free + [j for j in range(len(actual)) if j in owner]:
            found = match(expected[i], actual[j], exact_lists=exact, path=element_path)
            if found is not None and (closest is None or _depth(found) > _depth(closest)):
                closest = _tag(found, j)
        return Mismatch(
            element_path,
            "no actual element matches this expected element",
            expected[i],
            actual,
            closest,
        )
    return None


def _tag(found: Mismatch, actual_index: int) -> Mismatch:
    """Tag a candidate's mismatch with the actual element it was compared with."""
    return Mismatch(
        found.path,
        f"{found.reason} [actual element {actual_index}]",
        found.expected,
        found.actual,
        found.closest,
    )
