"""Which request the origin received belongs to which run: one pure function, shared.

A run's requests are those that arrived between the moment it was started and the moment it
ended (both on the same clock as :attr:`~kfm_conformance.upstream.Exchange.at`). The first of
them is "the run's request": the one that carries the validators its run-state claims.
"""

from __future__ import annotations

from collections.abc import Iterable

from kfm_conformance.upstream import Exchange


def requests_of_run(
    exchanges: Iterable[Exchange], started_at: float, ended_at: float
) -> list[Exchange]:
    """Every exchange that arrived while the run was alive, in order of arrival."""
    return sorted(
        (e for e in exchanges if started_at <= e.at <= ended_at), key=lambda e: (e.at, e.number)
    )


def request_of_run(
    exchanges: Iterable[Exchange], started_at: float, ended_at: float
) -> Exchange | None:
    """The run's first request, or ``None`` when it sent none."""
    found = requests_of_run(exchanges, started_at, ended_at)
    return found[0] if found else None
