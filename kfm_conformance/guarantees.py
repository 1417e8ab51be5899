"""The guarantee catalogue, as data: the single source of the stable guarantee IDs.

Each :class:`Guarantee` names the blueprint clause it comes from (the spec anchor, as
cache-tests names one for every check) and the feature file that encodes it. Tags in feature
files, report rows and the CLI's ``--only`` all use these IDs.
"""

from __future__ import annotations

from dataclasses import dataclass

BLUEPRINT_DOC = "docs/pipelines/orchestration/control-plane-blueprint/README.md"


@dataclass(frozen=True)
class Guarantee:
    id: str
    title: str
    clause: str
    feature: str

    @property
    def anchor(self) -> str:
        return f"{BLUEPRINT_DOC} — {self.clause}"


CATALOGUE: tuple[Guarantee, ...] = (
    Guarantee(
        "change-detection",
        "Change detection with HTTP validators",
        "Reference Implementation: 'If-Modified-Since protocol correctness'; Scope: "
        "'Change-detection ingestion patterns (HTTP, API variation, 304-awareness)'",
        "change_detection.feature",
    ),
    Guarantee(
        "empty-rejection",
        "Empty upstream data is rejected",
        "Reference Implementation: 'Rejects empty upstream responses'",
        "empty_rejection.feature",
    ),
    Guarantee(
        "invalid-input",
        "Malformed upstream data is rejected",
        "Reference Implementation: 'Rejects empty upstream responses'; Guarantees: "
        "'Atomic publication with WAL'",
        "invalid_input.feature",
    ),
    Guarantee(
        "exit-codes",
        "Deterministic exit codes",
        "Reference Implementation: 'Deterministic exit codes'",
        "exit_codes.feature",
    ),
    Guarantee(
        "idempotency",
        "Idempotent run-state",
        "Guarantees: 'Idempotent run-state enforcement'; Overview: 'Strict idempotency using "
        "run-state & WAL'",
        "idempotency.feature",
    ),
    Guarantee(
        "deterministic-output",
        "Deterministic output",
        "Guarantees: 'Deterministic transform ordering'; Purpose: 'deterministic ETL'",
        "deterministic_output.feature",
    ),
    Guarantee(
        "atomic-publication",
        "Write-ahead temp file, then atomic replace",
        "Reference Implementation: 'WAL write → atomic replace'; Guarantees: 'Atomic "
        "publication with WAL'; Overview: 'Atomic publication & rollback'",
        "atomic_publication.feature",
    ),
    Guarantee(
        "lineage",
        "Lineage through OpenLineage",
        "Overview: 'OpenLineage (dataset dependencies + run facets)'; Integration Notes: "
        "'Outputs fully compatible with Marquez'",
        "lineage.feature",
    ),
    Guarantee(
        "telemetry",
        "Traces through OpenTelemetry",
        "Integration Notes: 'Trace every ingestion + transform step'",
        "telemetry.feature",
    ),
    Guarantee(
        "promotion",
        "Branch-based promotion in lakeFS",
        "Overview: 'Branch-based promotion (lakeFS + Airflow)'; Guarantees: 'lakeFS-safe "
        "promotion flow'",
        "promotion.feature",
    ),
    Guarantee(
        "provenance",
        "Provenance sidecars (STAC, PROV-O, DCAT)",
        "Guarantees: 'Full provenance: STAC + PROV-O + DCAT'",
        "provenance.feature",
    ),
)

BY_ID: dict[str, Guarantee] = {g.id: g for g in CATALOGUE}
IDS: tuple[str, ...] = tuple(BY_ID)


def get(guarantee_id: str) -> Guarantee:
    try:
        return BY_ID[guarantee_id]
    except KeyError:
        raise KeyError(f"unknown guarantee {guarantee_id!r}; known: {', '.join(IDS)}") from None
