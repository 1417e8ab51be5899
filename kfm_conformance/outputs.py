"""Reading a published output back, so rows can be compared with what the upstream served.

The blueprint's pipelines publish Parquet; CSV and JSON Lines are read too, chosen by the
output's file extension. Comparison is by value and order: the harness checks that the rows
the pipeline published are the rows the upstream sent, in the upstream's order, and says
where the first difference is when they are not.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

#: Columns some writers add that are not data (pandas' stored index).
_BOOKKEEPING_PREFIX = "__index_level_"


class UnreadableOutput(Exception):
    """The published file cannot be read as its format: for the pipeline, a broken output."""


def read_table(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        elif suffix == ".csv":
            table = pa_csv.read_csv(path)
        elif suffix in (".jsonl", ".ndjson"):
            table = pa_json.read_json(path)
        else:
            raise UnreadableOutput(f"unsupported output format {suffix!r}")
    except (pa.ArrowException, OSError) as exc:
        raise UnreadableOutput(f"{path.name}: {exc}") from exc
    keep = [n for n in table.column_names if not n.startswith(_BOOKKEEPING_PREFIX)]
    return table.select(keep)


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_table(path).to_pylist()
    return rows


def columns(path: Path) -> list[tuple[str, str]]:
    """The output's columns as (name, arrow type) pairs."""
    table = read_table(path)
    return [(field.name, str(field.type)) for field in table.schema]


@dataclass(frozen=True)
class RowComparison:
    same: bool
    expected_rows: int
    observed_rows: int
    first_difference: int | None
    expected_row: Any = None
    observed_row: Any = None

    def describe(self) -> str:
        if self.same:
            return f"{self.observed_rows} rows, identical to the upstream, in upstream order"
        if self.first_difference is None:
            return f"expected {self.expected_rows} rows, found {self.observed_rows}"
        return (
            f"expected {self.expected_rows} rows, found {self.observed_rows}; first difference at "
            f"row {self.first_difference}: expected {self.expected_row!r}, "
            f"found {self.observed_row!r}"
        )


def compare_rows(payload: bytes, path: Path) -> RowComparison:
    """Compare the upstream's JSON array with the published rows, by value and by order."""
    expected: list[dict[str, Any]] = json.loads(payload)
    observed = read_rows(path)
    for index, (want, got) in enumerate(zip(expected, observed, strict=False)):
        if want != got:
            return RowComparison(False, len(expected), len(observed), index, want, got)
    same = len(expected) == len(observed)
    return RowComparison(same, len(expected), len(observed), None)


def poll_during(
    path: Path, action: Callable[[], object], interval_s: float = 0.0005
) -> list[str | None]:
    """Read ``path`` again and again while ``action()`` runs (a reader beside a publication);
    return the digest of each read that differs from the one before (None: no file)."""
    seen: list[str | None] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                digest = None
            else:
                digest = hashlib.sha256(data).hexdigest()
            if not seen or seen[-1] != digest:
                seen.append(digest)
            time.sleep(interval_s)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        action()
    finally:
        stop.set()
        thread.join()
    return seen
