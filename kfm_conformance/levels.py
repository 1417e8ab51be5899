"""The blueprint's SHOULDs, in one place: which checks warn instead of failing.

Everything not named here is a MUST (``required``). A recommended check that does not hold
makes its scenario ``warn``; under ``--strict`` it is a ``fail``. Two kinds of entries:

- **findings**, by their check name (``lineage.schema-facet``): a fact judged inside a
  scenario. A required scenario may hold recommended findings (its MUSTs still fail it).
- **scenarios**, by their check ID (``<guarantee>/<@id: slug>``, every example of an
  outline): a scenario that is a SHOULD as a whole. Skipped because a tool was missing, it
  does not stand in the way of a certificate, as a required scenario would.

Each entry says why it is a SHOULD, for the reviewer who asks. Nothing else decides a level:
neither a tag in a feature file nor the function that builds a finding.
"""

from __future__ import annotations

#: Findings that are SHOULDs, by check name, with the reason.
RECOMMENDED_FINDINGS: dict[str, str] = {
    "lineage.schema-facet": "the OpenLineage schema facet is optional in the specification",
    "telemetry.step-spans": "the blueprint traces every step; one span per run still traces it",
    "telemetry.http-semconv": "OpenTelemetry's HTTP semantic conventions are a recommendation",
    "telemetry.runid-correlation": "tying a trace to its lineage run is good practice, not a "
    "clause of the blueprint",
    "protocol.durable": "fsync before the rename protects against power loss, which a crash "
    "test cannot show; the blueprint names the atomic replace, not the flush",
    "protocol.temp-fsynced": "as protocol.durable, for the output's temp file",
    "protocol.dir-fsynced": "as protocol.durable, for the output's directory after the rename",
    "protocol.state-temp-fsynced": "as protocol.durable, for the run-state's temp file",
    "protocol.state-dir-fsynced": "as protocol.durable, for the run-state's directory",
    "protocol.state-after-data": "the order of writes in a trace is a mechanism; what the "
    "run-state claims after a crash is judged by the crash campaign",
    "protocol.state-replaced-by-rename": "how the run-state is written is a mechanism; what it "
    "claims after a crash is judged by the crash campaign",
    "provenance.declared": "the blueprint names three sidecars; a profile may publish fewer",
    "provenance.stac.checksum-present": "file:checksum is optional in the STAC file extension",
    "provenance.stac.checksum-algorithm": "a checksum the harness cannot verify is not wrong",
    "provenance.prov.checksum-present": "a checksum of the output is a recommendation of the "
    "blueprint's provenance, not a clause",
    "provenance.dcat.checksum-present": "as provenance.prov.checksum-present, for DCAT",
    "state.unchanged-undeclared": "without declared state paths the harness cannot tell the "
    "run-state from a cache or a log",
}

#: Scenarios that are SHOULDs as a whole, by check ID, with the reason.
RECOMMENDED_SCENARIOS: dict[str, str] = {
    "atomic-publication/the-system-calls-of-a-publication-show-the-run-state-changed-last-"
    "after-the-output": RECOMMENDED_FINDINGS["protocol.state-after-data"],
    "atomic-publication/the-system-calls-of-a-publication-show-every-file-flushed-to-disk-"
    "before-it-is-renamed": RECOMMENDED_FINDINGS["protocol.durable"],
    "provenance/the-pipeline-declares-all-three-provenance-sidecars": RECOMMENDED_FINDINGS[
        "provenance.declared"
    ],
}


def finding_is_recommended(check: str) -> bool:
    return check in RECOMMENDED_FINDINGS


def scenario_is_recommended(check_id: str) -> bool:
    """Whether a scenario (any example of it) is a SHOULD as a whole."""
    return check_id.split("[", 1)[0] in RECOMMENDED_SCENARIOS
