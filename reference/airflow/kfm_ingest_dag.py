"""The reference pipeline as an Airflow 3 DAG: one task that wraps ``reference/pipeline.py``.

This is how a team would put existing ingestion code under Airflow: the task imports the
pipeline's functions (configuration, the locked fetch-transform-publish run, its spans) and
turns each outcome into Airflow's own vocabulary:

* success: an XCom ``kfm_outcome`` = ``published`` or ``not_modified``;
* a transient upstream failure (5xx, 429, timeout, refused or reset connection): an ordinary
  exception, which Airflow retries (``retries`` below);
* a permanent failure: an ``AirflowFailException`` subclass named for its class
  (``InvalidUpstream``, ``UpstreamRefused``, ``LocalIOError``, ``BadUsage``), which the profile
  maps to its outcome (``[airflow.outcomes]``).

Lineage comes from the OpenLineage provider at its defaults: the operator tells it the
datasets (the upstream as input; the published Parquet file, with its columns, as output) through
``get_openlineage_facets_on_start/_on_complete/_on_failure``; the pipeline's own emitter is
switched off (no ``OPENLINEAGE_URL`` reaches it). Traces: the pipeline's ``ingest`` span and its
steps nest under the task's worker span (the current span when ``execute`` runs) and carry the
provider's run ids for this task run and its DAG run.
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import Any

from airflow.exceptions import AirflowFailException
from airflow.sdk import DAG, BaseOperator

REFERENCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REFERENCE not in sys.path:
    sys.path.insert(0, REFERENCE)  # reference/pipeline.py and its sibling modules


class InvalidUpstream(AirflowFailException):
    """Empty, malformed, wrong-shaped or over-the-cap upstream data (no retry)."""


class UpstreamRefused(AirflowFailException):
    """The upstream refused the request (4xx other than 429; no retry)."""


class LocalIOError(AirflowFailException):
    """The output could not be written (no retry)."""


class BadUsage(AirflowFailException):
    """The run was not given a usable upstream URL (no retry)."""


class UpstreamTransient(Exception):
    """5xx, 429, a timeout, a refused or reset connection: worth a retry."""


class InternalError(AirflowFailException):
    """The pipeline broke in a way it did not expect."""


PERMANENT = {
    "invalid_upstream": InvalidUpstream,
    "upstream_refused": UpstreamRefused,
    "io_error": LocalIOError,
    "usage": BadUsage,
}


def _env_for_pipeline() -> dict[str, str]:
    """The task's environment without OpenLineage: the provider sends this task's lineage."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE_")}


class KfmIngestOperator(BaseOperator):
    """Fetch the upstream (``SRC``, or the DAG run's conf ``src``) and publish it, once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._published: str | None = None  # the output path when a new version was published

    # -- the work
    def execute(self, context: Any) -> None:
        import pipeline
        from airflow.providers.openlineage.plugins.macros import (
            lineage_root_run_id,
            lineage_run_id,
        )

        env = _env_for_pipeline()
        conf = context["dag_run"].conf or {}
        if not env.get("SRC") and conf.get("src"):
            env["SRC"] = str(conf["src"])
        try:
            cfg = pipeline.load_config(["pipeline.py"], env)
        except pipeline.Outcome as usage:
            raise BadUsage(f"usage: {usage.message}") from None
        tele = pipeline.Telemetry(cfg, env)
        ti = context["ti"]
        tele.run_id = lineage_run_id(ti)  # the trace names the provider's run id of this task
        report = pipeline.RunReport(pipeline.Outcome("internal_error", "run did not finish"))
        try:
            tele.start()
            if tele.root is not None:
                tele.root.set_attribute("openlineage.root_run_id", lineage_root_run_id(ti))
            report = pipeline.run(cfg, tele)
        except pipeline.Outcome as ended:
            report = pipeline.RunReport(ended)
        except Exception as exc:
            report = pipeline.RunReport(
                pipeline.Outcome("internal_error", f"{type(exc).__name__}: {exc}")
            )
        finally:
            if tele.configured:
                tele.finish(report.outcome, report.rows, None)
        outcome = report.outcome
        if outcome.code == 0:
            if report.published:
                self._published = cfg.output
            said = "published" if report.published else "not_modified"
            ti.xcom_push(key="kfm_outcome", value=said)
            self.log.info("%s: %s", said, outcome.message)
            return
        if outcome.kind == "upstream_transient":
            raise UpstreamTransient(f"upstream_transient: {outcome.message}")
        raise PERMANENT.get(outcome.kind, InternalError)(f"{outcome.kind}: {outcome.message}")

    # -- lineage, for the OpenLineage provider
    def _upstream(self) -> list[Any]:
        import pipeline
        from openlineage.client.event_v2 import InputDataset

        url = os.environ.get("SRC", "")
        if not url:
            return []
        namespace, name = pipeline._dataset_namespace(url)
        return [InputDataset(namespace=namespace, name=name)]

    def _output(self) -> list[Any]:
        import pipeline
        from openlineage.client.event_v2 import OutputDataset
        from openlineage.client.facet_v2 import schema_dataset

        if self._published is None:
            return []  # nothing new: claim no new version of the output
        columns = pipeline._published_columns(self._published) or []
        fields = [schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in columns]
        return [
            OutputDataset(
                namespace="file",
                name=self._published,
                facets={"schema": schema_dataset.SchemaDatasetFacet(fields=fields)},
            )
        ]

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        return OperatorLineage(inputs=self._upstream())

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        return OperatorLineage(inputs=self._upstream(), outputs=self._output())

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        return OperatorLineage(inputs=self._upstream())


with DAG(
    dag_id="kfm_reference_ingest",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    default_args={"retries": 3, "retry_delay": datetime.timedelta(minutes=1)},
    tags=["kfm"],
):
    KfmIngestOperator(task_id="ingest")
