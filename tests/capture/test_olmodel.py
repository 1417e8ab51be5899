"""The default OpenLineage validator: the model that ships with openlineage-python.

Real client events are valid; known-bad events fail under it AND under the full JSON Schema
validation (the second only where the schema cache is present: it is data outside the repo).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from openlineage.client.facet_v2 import data_quality_metrics_dataset
from openlineage.client.serde import Serde
from test_olschema import rich_event

from kfm_conformance.capture.olmodel import OpenLineageModel, default_model, iter_model_urls
from kfm_conformance.capture.olschema import OpenLineageSchemas
from kfm_conformance.verdict import Level


@pytest.fixture(scope="module")
def model() -> OpenLineageModel:
    return default_model()


@pytest.fixture(params=["model", "json-schema"])
def validator(request: pytest.FixtureRequest) -> Any:
    """Each validator in turn: a known-bad event must fail under both."""
    if request.param == "model":
        return default_model()
    return OpenLineageSchemas(request.getfixturevalue("openlineage_schema_dir"))


def test_real_client_events_are_valid(model: OpenLineageModel) -> None:
    event = rich_event()
    findings, notes = model.check(event)
    assert findings == [] and notes == []


def test_every_class_of_the_model_names_its_schema(model: OpenLineageModel) -> None:
    urls = list(iter_model_urls())
    assert "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent" in urls
    assert any("/ParentRunFacet.json#" in u for u in urls)
    assert model.provenance()["validator"] == "openlineage-python"
    assert model.provenance()["version"] == model.version != "unknown"


KNOWN_BAD = [
    (lambda e: e.__setitem__("eventType", "DONE"), "$.eventType"),
    (lambda e: e.__setitem__("eventType", "complete"), "$.eventType"),
    (lambda e: e.__setitem__("eventTime", "yesterday"), "$.eventTime"),
    (lambda e: e.__setitem__("eventTime", "2026-01-01"), "$.eventTime"),
    (lambda e: e.__setitem__("eventTime", "2026-01-01T10:00:00"), "$.eventTime"),  # no zone
    (lambda e: e.pop("eventTime"), "$"),
    (lambda e: e["run"].__setitem__("runId", "run-42"), "$.run.runId"),
    (lambda e: e["job"].pop("namespace"), "$.job"),
    (lambda e: e["job"].__setitem__("name", 7), "$.job.name"),
    (lambda e: e.__setitem__("producer", "my pipeline"), "$.producer"),
    (lambda e: e["run"]["facets"]["nominalTime"].pop("_producer"), "$.run.facets.nominalTime"),
    (lambda e: e["run"]["facets"]["nominalTime"].pop("_schemaURL"), "$.run.facets.nominalTime"),
    (
        lambda e: e["outputs"][0]["outputFacets"]["outputStatistics"].__setitem__("rowCount", "40"),
        "$.outputs[0].outputFacets.outputStatistics.rowCount",
    ),
    (
        lambda e: e["outputs"][0]["facets"]["schema"]["fields"][0].pop("name"),
        "$.outputs[0].facets.schema.fields[0]",
    ),
    (lambda e: e["outputs"][0]["facets"].__setitem__("version", 3), "$.outputs[0].facets.version"),
    (lambda e: e.__setitem__("inputs", None), "$.inputs"),
]


@pytest.mark.parametrize(
    ("mutate", "path"),
    KNOWN_BAD,
    ids=[
        "eventType-unknown",
        "eventType-lowercase",
        "eventTime-words",
        "eventTime-date-only",
        "eventTime-without-zone",
        "eventTime-missing",
        "runId-not-uuid",
        "job-without-namespace",
        "job-name-not-string",
        "producer-not-uri",
        "facet-without-producer",
        "facet-without-schemaURL",
        "rowCount-string",
        "schema-field-without-name",
        "facet-not-object",
        "inputs-null",
    ],
)
def test_known_bad_events_fail_under_both_validators(
    validator: Any, mutate: Any, path: str
) -> None:
    event = rich_event()
    mutate(event)
    findings = validator.validate(event)
    assert findings, f"{validator.name} accepted a bad event"
    for finding in findings:
        assert finding.check == "lineage.spec-valid" and not finding.ok
        assert finding.level is Level.REQUIRED and finding.expected and finding.observed
    assert any(f.observed.startswith(f"at {path}") for f in findings), [f.message for f in findings]


def test_a_facet_version_the_cache_lacks_is_no_error_by_default(model: OpenLineageModel) -> None:
    """openlineage-python 1.54 stamps DataQualityMetricsDatasetFacet 1-0-1 on its facet."""
    event = rich_event()
    facet = data_quality_metrics_dataset.DataQualityMetricsDatasetFacet(
        columnMetrics={"id": data_quality_metrics_dataset.ColumnMetrics(nullCount=0)}, rowCount=3
    )
    event["inputs"][0]["facets"]["dataQualityMetrics"] = Serde.to_dict(facet)
    assert "/1-0-1/" in event["inputs"][0]["facets"]["dataQualityMetrics"]["_schemaURL"]
    findings, _ = model.check(event)
    assert findings == []
    bad = copy.deepcopy(event)
    bad["inputs"][0]["facets"]["dataQualityMetrics"]["rowCount"] = "three"
    assert model.validate(bad)


def test_a_facet_version_the_model_lacks_is_checked_against_its_own_version(
    model: OpenLineageModel,
) -> None:
    event = rich_event()
    facet = event["outputs"][0]["facets"]["schema"]
    facet["_schemaURL"] = facet["_schemaURL"].replace("/1-2-0/", "/1-9-9/")
    findings, notes = model.check(event)
    assert findings == []
    assert any("1-9-9" in n and "validated against its version 1-2-0" in n for n in notes)
    facet["fields"] = "id, name"
    assert model.validate(event)
    # Another MODEL number (a breaking change): only the base facet rules, and said so.
    facet["_schemaURL"] = facet["_schemaURL"].replace("/1-9-9/", "/2-0-0/")
    findings, notes = model.check(event)
    assert findings == [] and any("only the base facet rules" in n for n in notes)


def test_a_custom_facet_gets_the_base_rules(model: OpenLineageModel) -> None:
    event = rich_event()
    event["run"]["facets"]["kfm"] = {
        "_producer": "https://example.invalid/p",
        "_schemaURL": "https://example.invalid/schemas/KfmRunFacet.json#/$defs/KfmRunFacet",
        "anything": [1, 2, 3],
    }
    assert model.validate(event) == []
    del event["run"]["facets"]["kfm"]["_producer"]
    assert any("_producer" in f.message for f in model.validate(event))


def test_an_unknown_core_version_is_validated_against_the_model_and_noted(
    model: OpenLineageModel,
) -> None:
    event = rich_event()
    event["schemaURL"] = "https://openlineage.io/spec/2-0-9/OpenLineage.json#/$defs/RunEvent"
    findings, notes = model.check(event)
    assert findings == [] and any("2-0-9" in n for n in notes)


def test_the_model_does_not_change_the_event(model: OpenLineageModel) -> None:
    event = rich_event()
    before = copy.deepcopy(event)
    model.validate(event)
    assert event == before


def test_both_validators_describe_themselves(openlineage_schema_dir: Path) -> None:
    schemas = OpenLineageSchemas(openlineage_schema_dir)
    assert "JSON Schema" in schemas.describe()
    assert schemas.provenance()["validator"] == "json-schema"
    assert "openlineage-python" in default_model().describe()
