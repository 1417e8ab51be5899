"""Validation of real client events, and of deliberately broken ones, against the official schemas.

The schemas are data outside the repo: ``../shared/openlineage-spec`` beside the checkout, or
the directory in ``KFM_OPENLINEAGE_SCHEMAS``. Without them these tests fail under CI and skip
elsewhere.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import pkgutil
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    column_lineage_dataset,
    data_quality_metrics_input_dataset,
    dataset_version_dataset,
    datasource_dataset,
    documentation_job,
    error_message_run,
    job_type_job,
    lifecycle_state_change_dataset,
    nominal_time_run,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    schema_dataset,
    source_code_location_job,
    sql_job,
)
from openlineage.client.serde import Serde
from openlineage.client.uuid import generate_new_uuid

from kfm_conformance.capture import olschema
from kfm_conformance.capture.olschema import OpenLineageSchemas
from kfm_conformance.verdict import ConfigurationError, HarnessError, Level


@pytest.fixture(scope="module")
def schema_dir(openlineage_schema_dir: Path) -> Path:
    return openlineage_schema_dir


@pytest.fixture(scope="module")
def schemas(schema_dir: Path) -> OpenLineageSchemas:
    return OpenLineageSchemas(schema_dir)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def rich_event() -> dict[str, Any]:
    """A COMPLETE event from the real client, with many of its standard facets."""
    run_id = str(generate_new_uuid())
    event = RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=_now(),
        run=Run(
            runId=run_id,
            facets={
                "nominalTime": nominal_time_run.NominalTimeRunFacet(nominalStartTime=_now()),
                "parent": parent_run.ParentRunFacet(
                    run=parent_run.Run(runId=str(generate_new_uuid())),
                    job=parent_run.Job(namespace="kfm", name="scheduler"),
                ),
                "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                    version="1.0", name="python", openlineageAdapterVersion="1.54.0"
                ),
                "errorMessage": error_message_run.ErrorMessageRunFacet(
                    message="none", programmingLanguage="python"
                ),
            },
        ),
        job=Job(
            namespace="kfm",
            name="kfm.ingest",
            facets={
                "jobType": job_type_job.JobTypeJobFacet(
                    processingType="BATCH", integration="KFM", jobType="JOB"
                ),
                "documentation": documentation_job.DocumentationJobFacet(description="ingest"),
                "sql": sql_job.SQLJobFacet(query="select 1"),
                "sourceCodeLocation": source_code_location_job.SourceCodeLocationJobFacet(
                    type="git", url="https://example.invalid/repo.git"
                ),
            },
        ),
        inputs=[
            InputDataset(
                namespace="http://127.0.0.1:8080",
                name="/data/stations.csv",
                facets={
                    "dataSource": datasource_dataset.DatasourceDatasetFacet(
                        name="upstream", uri="http://127.0.0.1:8080"
                    )
                },
                inputFacets={
                    "dataQualityMetrics": (
                        data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
                            columnMetrics={}, rowCount=3
                        )
                    )
                },
            )
        ],
        outputs=[
            OutputDataset(
                namespace="file",
                name="/srv/kfm/out/data.parquet",
                facets={
                    "schema": schema_dataset.SchemaDatasetFacet(
                        fields=[
                            schema_dataset.SchemaDatasetFacetFields(name="id", type="int64"),
                            schema_dataset.SchemaDatasetFacetFields(name="name", type="string"),
                        ]
                    ),
                    "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                        datasetVersion="v1"
                    ),
                    "lifecycleStateChange": (
                        lifecycle_state_change_dataset.LifecycleStateChangeDatasetFacet(
                            lifecycleStateChange=lifecycle_state_change_dataset.LifecycleStateChange.OVERWRITE
                        )
                    ),
                    "columnLineage": column_lineage_dataset.ColumnLineageDatasetFacet(
                        fields={
                            "id": column_lineage_dataset.Fields(
                                inputFields=[
                                    column_lineage_dataset.InputField(
                                        namespace="http://127.0.0.1:8080",
                                        name="/data/stations.csv",
                                        field="id",
                                    )
                                ]
                            )
                        }
                    ),
                },
                outputFacets={
                    "outputStatistics": (
                        output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                            rowCount=3, size=1024
                        )
                    )
                },
            )
        ],
    )
    return Serde.to_dict(event)


def test_rich_client_event_is_valid(schemas: OpenLineageSchemas) -> None:
    event = rich_event()
    assert event["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json")
    assert schemas.validate(event) == []


def test_every_client_facet_schema_is_cached_or_reported_unavailable(
    schemas: OpenLineageSchemas,
) -> None:
    """Each schema URL the installed client stamps on its classes resolves or is named."""
    import openlineage.client.generated as generated

    urls: set[str] = set()
    for module_info in pkgutil.iter_modules(generated.__path__):
        module = importlib.import_module(f"{generated.__name__}.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and hasattr(cls, "_get_schema"):
                urls.add(cls._get_schema())
    assert urls
    for url in sorted(urls):
        facet = {"_producer": "https://example.invalid/p", "_schemaURL": url}
        event = rich_event()
        event["run"]["facets"]["probe"] = facet
        if schemas.has(url):
            continue
        with pytest.raises(HarnessError, match=r"^schema unavailable: "):
            schemas.validate(event)


def _assert_finding_at(findings: list[Any], path: str, text: str) -> None:
    assert findings, "expected at least one finding"
    for finding in findings:
        assert finding.check == "lineage.spec-valid"
        assert finding.ok is False
        assert finding.level is Level.REQUIRED
        assert finding.expected and finding.observed
    matching = [f for f in findings if f.observed.startswith(f"at {path}: ") and text in f.message]
    assert matching, [f.message for f in findings]


@pytest.mark.parametrize(
    ("mutate", "path", "text"),
    [
        (lambda e: e.pop("eventTime"), "$", "'eventTime' is a required property"),
        (lambda e: e["run"].__setitem__("runId", "not-a-uuid"), "$.run.runId", "uuid"),
        (lambda e: e.__setitem__("eventType", "DONE"), "$.eventType", "is not one of"),
        (lambda e: e["job"].pop("name"), "$.job", "'name' is a required property"),
        (
            lambda e: e["outputs"][0]["facets"]["schema"]["fields"][0].__setitem__("name", 5),
            "$.outputs[0].facets.schema.fields[0].name",
            "is not of type 'string'",
        ),
        (
            lambda e: e["outputs"][0]["outputFacets"]["outputStatistics"].__setitem__(
                "rowCount", "three"
            ),
            "$.outputs[0].outputFacets.outputStatistics.rowCount",
            "is not of type 'integer'",
        ),
        (
            lambda e: e["run"]["facets"]["nominalTime"].pop("_producer"),
            "$.run.facets.nominalTime",
            "'_producer' is a required property",
        ),
        (
            lambda e: e["inputs"][0].__setitem__("namespace", 42),
            "$.inputs[0].namespace",
            "is not of type 'string'",
        ),
    ],
    ids=[
        "no-eventTime",
        "runId-not-uuid",
        "bad-eventType",
        "job-without-name",
        "schema-facet-bad-field",
        "output-statistics-bad-type",
        "facet-without-producer",
        "input-namespace-not-string",
    ],
)
def test_broken_events_give_findings_with_paths(
    schemas: OpenLineageSchemas, mutate: Any, path: str, text: str
) -> None:
    event = rich_event()
    mutate(event)
    _assert_finding_at(schemas.validate(event), path, text)


def test_event_without_schema_url_is_a_finding(schemas: OpenLineageSchemas) -> None:
    event = rich_event()
    del event["schemaURL"]
    _assert_finding_at(schemas.validate(event), "$.schemaURL", "no schemaURL")


def test_unknown_core_version_is_schema_unavailable(schemas: OpenLineageSchemas) -> None:
    event = rich_event()
    event["schemaURL"] = "https://openlineage.io/spec/9-9-9/OpenLineage.json#/$defs/RunEvent"
    with pytest.raises(HarnessError, match=r"^schema unavailable: .*9-9-9/OpenLineage\.json"):
        schemas.validate(event)


def test_unknown_facet_version_is_schema_unavailable(schemas: OpenLineageSchemas) -> None:
    event = rich_event()
    facet = event["outputs"][0]["facets"]["schema"]
    facet["_schemaURL"] = facet["_schemaURL"].replace("/1-2-0/", "/9-9-9/")
    with pytest.raises(HarnessError, match=r"^schema unavailable: .*9-9-9/SchemaDatasetFacet"):
        schemas.validate(event)


def test_deprecated_client_api_names_a_core_version_the_cache_lacks(
    schemas: OpenLineageSchemas,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from openlineage.client import run as legacy

    event = legacy.RunEvent(
        eventType=legacy.RunState.START,
        eventTime=_now(),
        run=legacy.Run(runId=str(generate_new_uuid())),
        job=legacy.Job(namespace="kfm", name="kfm.ingest"),
        producer="https://example.invalid/p",
    )
    data = Serde.to_dict(event)
    assert data["schemaURL"] == legacy.SCHEMA_URL
    if schemas.has(legacy.SCHEMA_URL):
        pytest.skip("the cache holds the legacy core version")
    with pytest.raises(HarnessError, match="schema unavailable"):
        schemas.validate(data)


def test_custom_facet_gets_core_rules_only(schemas: OpenLineageSchemas) -> None:
    event = rich_event()
    event["run"]["facets"]["kfm"] = {
        "_producer": "https://example.invalid/p",
        "_schemaURL": "https://example.invalid/schemas/KfmRunFacet.json#/$defs/KfmRunFacet",
        "anything": [1, 2, 3],
    }
    assert schemas.validate(event) == []
    del event["run"]["facets"]["kfm"]["_producer"]
    findings = schemas.validate(event)
    assert any("_producer" in f.message for f in findings)


def test_missing_or_empty_cache_is_a_harness_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="schema unavailable"):
        OpenLineageSchemas(tmp_path / "absent")
    with pytest.raises(HarnessError, match="schema unavailable"):
        OpenLineageSchemas(tmp_path)


def test_from_env_or_option(
    schema_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(olschema.ENV_VAR, raising=False)
    assert OpenLineageSchemas.from_env_or_option(None) is None

    from_option = OpenLineageSchemas.from_env_or_option(str(schema_dir))
    assert from_option is not None
    assert "https://openlineage.io/spec/2-0-2/OpenLineage.json" in from_option.core_versions
    assert OpenLineageSchemas.from_env_or_option(str(schema_dir)) is from_option  # loaded once

    monkeypatch.setenv(olschema.ENV_VAR, str(schema_dir))
    assert OpenLineageSchemas.from_env_or_option(None) is from_option
    with pytest.raises(ConfigurationError):
        OpenLineageSchemas.from_env_or_option(str(tmp_path / "nowhere"))
    monkeypatch.setenv(olschema.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigurationError):
        OpenLineageSchemas.from_env_or_option(None)


def test_validation_does_not_change_the_event(schemas: OpenLineageSchemas) -> None:
    event = rich_event()
    before = copy.deepcopy(event)
    schemas.validate(event)
    assert event == before
