#!/usr/bin/env python3
"""Run one Airflow 3 DAG run as one pipeline run, and exit with the profile's outcome code.

A standalone script: it is run by the *Airflow* virtual environment's interpreter, which does
not have kfm-conformance installed, so it imports only the standard library and Airflow.

    dag_runner.py --dag-file F --dag-id D [--task T ...] [--outcome PATTERN=OUTCOME ...]
                  [--exit-codes JSON] [--outcome-xcom KEY] [--db-template DB]
    dag_runner.py --make-db-template DB      migrate a fresh metadata DB once, to copy per run
    dag_runner.py --serve ADDRESS ...        the warm runner (see below)

One DAG run, the way ``dag.test()`` drives one (the same Airflow calls: serialize the DAG into
the metadata DB, create a manual DAG run, let ``DagRun.update_state`` schedule, run each task
in-process through the Task SDK's supervisor and the in-process execution API), with these
differences:

* every task try runs under a ``worker.<task_id>`` span parented to the task instance's own
  context carrier (read back from the metadata DB), as a real worker does; ``dag.test()`` has
  no worker span, so the task's own spans would start a second trace;
* the listeners hear that the DAG run started, as from a scheduler (so the OpenLineage
  provider sends the DAG run's START, which ``dag.test()`` never does);
* one try per task: a try that Airflow puts in ``up_for_retry`` ends the pipeline run as
  ``upstream_transient`` (the retry is the scheduler's next run, as with any pipeline that
  exits with a transient code), and the DAG run is closed as failed through Airflow's own
  ``update_state``;
* the process ends with ``os._exit`` once lineage and spans are flushed (interpreter teardown
  of Airflow costs seconds and adds nothing).

Each run has a private ``AIRFLOW_HOME`` in the run's temp dir (``TMPDIR``), never in the
working directory, with the metadata DB copied from the template. The working directory and
the upstream URL reach the tasks as the process's cwd and ``SRC`` and as the DAG run's conf
(``{"src": ..., "workdir": ...}``).

Outcomes, from Airflow's states (of the tasks named with ``--task``, else of all tasks):

* every task succeeded or was skipped: ``published``, or what the XCom ``--outcome-xcom``
  (default ``kfm_outcome``) of such a task says (``published`` or ``not_modified``), or
  ``not_modified`` when one was skipped (a short-circuited downstream);
* a task in ``up_for_retry`` (an ordinary exception with retries left): ``upstream_transient``;
* a task ``failed`` (``AirflowFailException``, or retries exhausted): the first ``--outcome``
  whose regular expression matches ``"ExceptionClass: message"`` of the task's error; without a
  match, an error message that starts with an outcome name and a colon
  (``"invalid_upstream: empty payload"``) names its outcome; otherwise the run is an internal
  error (70, or 1 if 70 is declared a success code);
* a DAG run that failed with no failed task in the list (say an upstream task failed): the
  same rules applied to the failed task.

The warm runner (``--serve``) pays ``import airflow``, the DAG parse and the in-process
execution API once and forks one worker per run before any database connection or thread;
a run's process (``--client``) hands it its cwd, environment and standard streams and waits
for the exit code. See ``kfm_conformance/airflow/__init__.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any

OUTCOMES = (
    "published",
    "not_modified",
    "usage",
    "invalid_upstream",
    "upstream_refused",
    "upstream_transient",
    "io_error",
)
DEFAULT_EXIT_CODES = {
    "published": 0,
    "not_modified": 0,
    "usage": 2,
    "invalid_upstream": 65,
    "upstream_refused": 69,
    "upstream_transient": 75,
    "io_error": 74,
}
INTERNAL_ERROR = 70
FLUSH_TIMEOUT_S = 5.0
_T0 = (time.monotonic(), time.process_time())


def mark(phase: str) -> None:
    """With KFM_AIRFLOW_TIMING set: wall and CPU seconds since the process (or worker) began."""
    if os.environ.get("KFM_AIRFLOW_TIMING"):
        wall, cpu = time.monotonic() - _T0[0], time.process_time() - _T0[1]
        sys.stderr.write(f"dag_runner timing: {phase}: wall {wall:.2f} s, cpu {cpu:.2f} s\n")


class Spec:
    """What to run and how to judge it (from the command line)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.dag_file = os.path.abspath(args.dag_file)
        self.dag_id: str = args.dag_id
        self.tasks: list[str] = list(args.task or [])
        self.outcome_xcom: str = args.outcome_xcom
        self.exit_codes = {**DEFAULT_EXIT_CODES, **json.loads(args.exit_codes or "{}")}
        self.rules: list[tuple[re.Pattern[str], str]] = []
        for item in args.outcome or []:
            pattern, _, outcome = item.rpartition("=")
            if outcome not in OUTCOMES or not pattern:
                raise SystemExit(f"dag_runner: bad --outcome {item!r}")
            self.rules.append((re.compile(pattern), outcome))
        self.db_template: str | None = args.db_template

    def fingerprint(self) -> str:
        """What a warm runner must have been started for to run this spec."""
        return json.dumps(
            [
                self.dag_file,
                self.dag_id,
                self.tasks,
                self.outcome_xcom,
                self.exit_codes,
                [(p.pattern, o) for p, o in self.rules],
            ],
            sort_keys=True,
        )

    def code(self, outcome: str | None) -> int:
        if outcome is None:
            successes = {self.exit_codes["published"], self.exit_codes["not_modified"]}
            return INTERNAL_ERROR if INTERNAL_ERROR not in successes else 1
        return int(self.exit_codes[outcome])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dag_runner")
    parser.add_argument("--dag-file")
    parser.add_argument("--dag-id")
    parser.add_argument("--task", action="append")
    parser.add_argument("--outcome", action="append")
    parser.add_argument("--outcome-xcom", default="kfm_outcome")
    parser.add_argument("--exit-codes")
    parser.add_argument("--db-template")
    parser.add_argument("--make-db-template")
    parser.add_argument("--serve")
    parser.add_argument("--client")
    parser.add_argument("--cold", action="store_true", help="never use a warm runner")
    parser.add_argument(
        "--trace-with",
        help="JSON list: the strace command (without a command to run) that traces a warm run",
    )
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- environment


def private_home() -> str:
    """A private AIRFLOW_HOME in the run's temp dir (never the working directory)."""
    home = tempfile.mkdtemp(prefix="kfm-airflow-home-")
    os.makedirs(os.path.join(home, "logs"), exist_ok=True)
    return home


def configure_environment(home: str, dag_file: str | None) -> None:
    """Point Airflow at the private home, and its traces at the harness's OTLP endpoint."""
    env = os.environ
    env["AIRFLOW_HOME"] = home
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home}/airflow.db"
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = os.path.join(home, "logs")
    env.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
    if dag_file is not None:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.dirname(dag_file)
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        env.setdefault("AIRFLOW__TRACES__OTEL_ON", "True")
        # Airflow picks the exporter by OTEL_TRACES_EXPORTER, where "otlp" means gRPC whatever
        # OTEL_EXPORTER_OTLP_PROTOCOL says; the standard reading is the protocol variable's.
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol.startswith("http") and env.get("OTEL_TRACES_EXPORTER", "otlp") == "otlp":
            env["OTEL_TRACES_EXPORTER"] = "otlp_proto_http"


def make_db_template(target: str) -> None:
    """Migrate a fresh metadata DB and move it to ``target`` (atomically)."""
    home = private_home()
    configure_environment(home, None)
    from airflow.utils import db

    db.initdb()
    from airflow import settings

    settings.dispose_orm()
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    temp = f"{target}.{os.getpid()}.tmp"
    shutil.copyfile(os.path.join(home, "airflow.db"), temp)
    os.replace(temp, target)
    shutil.rmtree(home, ignore_errors=True)


def install_db(home: str, template: str | None) -> bool:
    """Copy the template DB into the private home; False when there is none to copy."""
    if template and os.path.isfile(template):
        shutil.copyfile(template, os.path.join(home, "airflow.db"))
        return True
    return False


# --------------------------------------------------------------------------- the DAG run


class Warm:
    """What the warm runner pays once: the parsed DAG and the in-process execution API."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        dag_dir = os.path.dirname(spec.dag_file)
        if dag_dir not in sys.path:
            sys.path.insert(0, dag_dir)
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=spec.dag_file, bundle_path=None, bundle_name="dags-folder")
        dag = bag.dags.get(spec.dag_id)  # no DB lookup: the server has no DB connection
        if dag is None:
            errors = "; ".join(
                f"{k}: {v.strip().splitlines()[-1]}" for k, v in bag.import_errors.items()
            )
            raise UsageError(
                f"DAG {spec.dag_id!r} not found in {spec.dag_file}"
                + (f" ({errors})" if errors else "")
            )
        self.bag = bag
        self.dag = dag
        for task_id in spec.tasks:
            if task_id not in dag.task_dict:
                raise UsageError(f"task {task_id!r} is not in DAG {spec.dag_id!r}")

        self.synced_db: str | None = None
        self.synced_db_bytes: bytes | None = None

    def prebuild_api(self) -> None:
        """Build the in-process execution API app and its versioned routes (about 3 s of CPU,
        which Airflow otherwise spends on the first request of every run) before any fork."""
        from airflow.sdk.execution_time.supervisor import in_process_api_server

        api = in_process_api_server()
        _initialize_versioned_routes(api.app)

    def sync_once(self, home: str) -> None:
        """Write the DAG bundle and the serialized DAG into this process's DB, once; runs
        then copy that DB instead of the bare template. Closes every connection after."""
        from airflow import settings
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.dag_processing.dagbag import sync_bag_to_db

        session = settings.Session()
        DagBundlesManager().sync_bundles_to_db(session=session)
        session.commit()
        session.close()
        sync_bag_to_db(self.bag, "dags-folder", None)
        settings.dispose_orm()
        self.synced_db = os.path.join(home, "airflow.db")
        # Kept in memory: a worker that joins an isolated run cannot see this process's files.
        with open(self.synced_db, "rb") as handle:
            self.synced_db_bytes = handle.read()


def _initialize_versioned_routes(app: Any, depth: int = 0) -> None:
    """Cadwyn builds the execution API's versioned routers on its first request: do it now."""
    if getattr(app, "_cadwyn_initialized", True) is False:
        app._cadwyn_initialize()
    if depth < 3:
        for route in getattr(app, "routes", []):
            sub = getattr(route, "app", None)
            if sub is not None and sub is not app:
                _initialize_versioned_routes(sub, depth + 1)


class UsageError(Exception):
    """The DAG cannot be run as the profile describes it."""


def run_dag(warm: Warm, src: str, workdir: str) -> tuple[str | None, str]:
    """One DAG run. Returns (outcome or None for an internal error, one-line summary)."""
    from airflow import settings
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.models.dagrun import DagRun, get_or_create_dagrun
    from airflow.sdk import DagRunState, timezone
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    dag = warm.dag
    _dag_events_in_thread()
    mark("ready to run")
    session = settings.Session()
    if warm.synced_db is None:
        manager = DagBundlesManager()
        manager.sync_bundles_to_db(session=session)
        session.commit()
        sync_bag_to_db(warm.bag, "dags-folder", None)
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    scheduler_dag.on_success_callback = dag.on_success_callback
    scheduler_dag.on_failure_callback = dag.on_failure_callback
    now = timezone.utcnow()
    timetable = coerce_to_core_timetable(dag.timetable)
    dr: DagRun = get_or_create_dagrun(
        dag=scheduler_dag,
        start_date=now,
        logical_date=now,
        data_interval=timetable.infer_manual_data_interval(run_after=now),
        run_after=now,
        run_id=DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=now, run_after=now),
        session=session,
        conf={"src": src, "workdir": workdir},
        triggered_by=DagRunTriggeredByType.TEST,
        triggering_user_name="kfm-conformance",
    )
    results: dict[str, tuple[str, BaseException | None]] = {}
    finished = {"success", "failed", "skipped", "upstream_failed", "removed"}
    # What the scheduler does when it starts a queued run: tell the listeners (the OpenLineage
    # provider sends the DAG run's START). Wait until it is sent, so that it comes first and
    # no task's fork happens while the sending thread holds a lock.
    dr.notify_dagrun_state_changed(msg="started")
    _drain_dag_events()
    mark("DAG run created")
    while dr.state == DagRunState.RUNNING:
        session.expire_all()
        schedulable, _ = dr.update_state(session=session)
        for ti in schedulable:
            if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
            ti.scheduled_dttm = timezone.utcnow()
        session.commit()
        tis = list(dr.get_task_instances(session=session))
        scheduled = [t for t in tis if t.state == TaskInstanceState.SCHEDULED]
        retrying = [t for t in tis if t.state == TaskInstanceState.UP_FOR_RETRY]
        if retrying:
            # One try per task: the retry belongs to the next pipeline run. Close the DAG run
            # as failed through Airflow's own bookkeeping (listeners, the dag_run span).
            for ti in retrying:
                ti.set_state(TaskInstanceState.FAILED, session=session)
            session.commit()
            continue
        if not scheduled:
            pending = [t.task_id for t in tis if state_name(t.state) not in finished]
            if pending:
                return None, f"DAG run stuck: tasks {pending} cannot run"
            continue
        for ti in scheduled:
            state, error = run_task_instance(ti, dag.task_dict[ti.task_id])
            results[ti.task_id] = (state, error)
            mark(f"task {ti.task_id} {state}")
    mark("DAG run finished")
    session.expire_all()
    outcome, summary = judge(warm.spec, dr, results, session)
    session.close()
    return outcome, summary


def _dag_events_in_thread() -> None:
    """Send the provider's DAG-run events from a thread of this process instead of the process
    pool a scheduler keeps (whose workers start by rebuilding Airflow's ORM: seconds per run).
    The events are the provider's own, built by the same adapter method from the same
    arguments; only the sending process differs."""
    from concurrent.futures import ThreadPoolExecutor

    try:
        from airflow.providers.openlineage.plugins import listener as ol_listener
    except ImportError:
        return
    ol_listener._get_process_adapter.cache_clear()
    listener = ol_listener.get_openlineage_listener()
    if getattr(listener, "_executor", None) is None:
        listener._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="openlineage-dag")


def _drain_dag_events() -> None:
    """Wait until the DAG-run events submitted so far have been sent."""
    try:
        from airflow.providers.openlineage.plugins import listener as ol_listener
    except ImportError:
        return
    executor = getattr(ol_listener.get_openlineage_listener(), "_executor", None)
    if executor is not None:
        try:
            executor.submit(lambda: None).result(timeout=FLUSH_TIMEOUT_S)
        except Exception as exc:
            sys.stderr.write(f"dag_runner: waiting for the DAG run's START failed: {exc}\n")


def run_task_instance(ti: Any, task: Any) -> tuple[str, BaseException | None]:
    """One try of one task, in-process, under its worker span."""
    from uuid import UUID

    from airflow.sdk.api.datamodels._generated import TaskInstance as TaskInstanceSDK
    from airflow.sdk.execution_time.supervisor import run_task_in_process
    from airflow.serialization.serialized_objects import create_scheduler_operator
    from airflow.utils.state import TaskInstanceState
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    ti.set_state(TaskInstanceState.QUEUED)
    carrier = ti.context_carrier or {}
    parent = TraceContextTextMapPropagator().extract(carrier) if carrier else None
    tracer = trace.get_tracer("kfm_conformance.airflow.dag_runner")
    sdk_ti = TaskInstanceSDK(
        id=UUID(str(ti.id)),
        task_id=ti.task_id,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        try_number=ti.try_number,
        map_index=ti.map_index,
        dag_version_id=UUID(str(ti.dag_version_id)),
    )
    error: BaseException | None = None
    with tracer.start_as_current_span(f"worker.{ti.task_id}", context=parent) as span:
        span.set_attributes(
            {
                "airflow.dag_id": ti.dag_id,
                "airflow.task_id": ti.task_id,
                "airflow.dag_run.run_id": ti.run_id,
                "airflow.task_instance.try_number": ti.try_number,
                "airflow.task_instance.map_index": ti.map_index if ti.map_index is not None else -1,
            }
        )
        try:
            result = run_task_in_process(ti=sdk_ti, task=task)
            state = state_name(result.ti.state)
            error = result.error
            ti.set_state(result.ti.state)
            ti.task = create_scheduler_operator(result.ti.task)
        except Exception as exc:  # the task runner itself broke
            error = exc
            state = "failed"
            if state_name(ti.state) not in ("success", "failed", "skipped", "up_for_retry"):
                ti.set_state(TaskInstanceState.FAILED)
        if state in ("failed", "up_for_retry"):
            span.set_status(Status(StatusCode.ERROR, f"task {state}"))
            if error is not None:
                span.record_exception(error)
    return state, error


def state_name(state: Any) -> str:
    """A task or DAG run state as its plain value (``"up_for_retry"``), enum or not."""
    return str(getattr(state, "value", state))


def _error_text(error: BaseException | None) -> str:
    if error is None:
        return "(no error recorded)"
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}"


def _error_outcome(spec: Spec, error: BaseException | None) -> str | None:
    text = _error_text(error)
    qualified = ""
    if error is not None:
        qualified = (
            f"{type(error).__module__}.{type(error).__qualname__}: " + text.split(": ", 1)[-1]
        )
    for pattern, outcome in spec.rules:
        if pattern.search(text) or (qualified and pattern.search(qualified)):
            return outcome
    message = text.split(": ", 1)[-1]
    head = re.match(r"([a-z_]+):", message)
    if head and head.group(1) in OUTCOMES:
        return head.group(1)
    return None


def _xcom_outcome(spec: Spec, dr: Any, task_ids: list[str], session: Any) -> str | None:
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    rows = session.execute(
        select(XComModel.task_id, XComModel.value).where(
            XComModel.dag_id == dr.dag_id,
            XComModel.run_id == dr.run_id,
            XComModel.key == spec.outcome_xcom,
            XComModel.task_id.in_(task_ids),
        )
    ).all()
    said = [XComModel.deserialize_value(row) for row in rows]
    said = [s for s in said if s in ("published", "not_modified")]
    if "published" in said:
        return "published"
    return said[0] if said else None


def judge(
    spec: Spec, dr: Any, results: dict[str, tuple[str, BaseException | None]], session: Any
) -> tuple[str | None, str]:
    """The pipeline outcome of a finished DAG run."""
    tis = {t.task_id: t for t in dr.get_task_instances(session=session)}
    counted = spec.tasks or sorted(tis)
    states = {t: state_name(tis[t].state) if t in tis else "missing" for t in counted}
    shown = ", ".join(f"{t}={s}" for t, s in states.items())
    retried = [t for t in counted if results.get(t, ("", None))[0] == "up_for_retry"]
    if retried:
        error = results[retried[0]][1]
        return (
            "upstream_transient",
            f"task {retried[0]} is up for retry ({_error_text(error)}); {shown}",
        )
    failed = [
        t for t in counted if results.get(t, ("", None))[0] == "failed" or states[t] == "failed"
    ]
    if not failed and state_name(dr.state) == "failed":
        failed = [t for t, (s, _) in results.items() if s == "failed"]
    if failed:
        error = results.get(failed[0], ("failed", None))[1]
        return _error_outcome(
            spec, error
        ), f"task {failed[0]} failed ({_error_text(error)}); {shown}"
    if state_name(dr.state) != "success" or any(
        s not in ("success", "skipped") for s in states.values()
    ):
        return None, f"DAG run {dr.state}; {shown}"
    said = _xcom_outcome(spec, dr, counted, session)
    if said is not None:
        return said, f"DAG run success, the tasks say {said}; {shown}"
    if any(s == "skipped" for s in states.values()):
        return "not_modified", f"DAG run success with skipped tasks; {shown}"
    return "published", f"DAG run success; {shown}"


# --------------------------------------------------------------------------- flushing, exit


def flush_and_exit(code: int, home: str | None = None) -> None:
    """Send what is still buffered (DAG-run lineage, spans), remove the private home, then
    exit without interpreter teardown."""
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    try:
        from airflow.providers.openlineage.plugins.listener import get_openlineage_listener

        listener = get_openlineage_listener()
        executor = getattr(listener, "_executor", None)
        if executor is not None:
            listener._executor = None
            executor.shutdown(wait=True)
    except Exception as exc:  # lineage is the pipeline's business; report, do not hide the outcome
        sys.stderr.write(f"dag_runner: flushing OpenLineage failed: {exc}\n")
    try:
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            remaining = max(0.1, deadline - time.monotonic())
            flushed = provider.force_flush(timeout_millis=int(remaining * 1000))
            mark(f"spans flushed ({type(provider).__name__}: {flushed})")
    except Exception as exc:
        sys.stderr.write(f"dag_runner: flushing spans failed: {exc}\n")
    try:
        from airflow import settings

        settings.dispose_orm()
    except Exception:
        pass
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)
    mark("flushed, exiting")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def execute(spec: Spec, warm: Warm | None, home: str) -> int:
    """One pipeline run in this process (cold, or a warm runner's forked worker)."""
    src = os.environ.get("SRC", "")
    workdir = os.getcwd()
    try:
        if warm is None:
            warm = Warm(spec)
        outcome, summary = run_dag(warm, src, workdir)
    except UsageError as exc:
        sys.stderr.write(f"dag_runner: {exc}\n")
        return spec.code("usage")
    code = spec.code(outcome)
    line = f"{outcome or 'internal_error'}: {summary}\n"
    (sys.stdout if outcome in ("published", "not_modified") else sys.stderr).write(line)
    return code


def cold_main(spec: Spec) -> None:
    home = private_home()
    configure_environment(home, spec.dag_file)
    migrated = install_db(home, spec.db_template)
    code = 70
    try:
        if not migrated:
            from airflow.utils import db

            db.initdb()
        code = execute(spec, None, home)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        sys.stderr.write(f"internal_error: the DAG runner failed: {type(exc).__name__}: {exc}\n")
        code = spec.code(None)
    flush_and_exit(code, home)


# --------------------------------------------------------------------------- the warm runner
#
# The server (``--serve ADDRESS``) imports Airflow, parses the DAG and builds the in-process
# execution API once, with no database connection and no thread, then forks one worker per
# run. A run's process (the client, spawned by the harness's sandbox) connects to ADDRESS (an
# abstract UNIX socket: it needs no file, so a read-only sandbox reaches it), sends its cwd and
# environment and passes its stdin, stdout and stderr; the worker takes them over, joins the
# client's mount and PID namespaces when they differ (an isolated client), runs the DAG run as
# the cold path does and exits; the server sends the client the exit code. A client that dies
# (killed at a timeout or by a crash scenario) closes the connection and the server kills its
# worker's process group at once.
#
# A traced run (strace: recordings, crash points, I/O-error injection) is a client started
# with ``--trace-with STRACE_ARGV``: it asks for a held worker, which stops itself (SIGSTOP)
# right after ``setsid``, before it does anything of the run; the server sends the client
# the worker's pid; the client attaches ``STRACE_ARGV -p PID`` to it, waits until the worker
# is traced, and continues it. Every traced run, recording or injection, is attached at that
# same point, so strace's per-tracee counts (``when=N``) agree between them. The server sends
# the worker's raw wait status, and a client whose worker was killed by a signal kills itself
# with the same signal, as strace does for a command it started. A client that is itself
# traced (a wrapper in front of it) never uses the server: it runs the cold path.

import signal  # noqa: E402 - the warm runner's imports, stdlib only
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402

_HELLO = struct.Struct("!I")
_CLONE_NEWNS = 0x00020000
_CLONE_NEWPID = 0x20000000


def _traced() -> bool:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("TracerPid:"):
                    return line.split()[1] != "0"
    except OSError:
        pass
    return False


def _address(name: str) -> str:
    return "\0" + name if not name.startswith(("/", "\0")) else name


def _send_frame(sock: socket.socket, data: bytes, fds: list[int] | None = None) -> None:
    payload = _HELLO.pack(len(data)) + data
    if fds:
        import array

        sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


#: Stands in for the runs' OPENLINEAGE_URL while the server loads the OpenLineage plugin (which
#: decides at import whether its listener exists); each run's own environment says where
#: events go, and a run whose environment wants no lineage runs cold.
_LINEAGE_PLACEHOLDER = "http://127.0.0.1:9/kfm-warm-runner-placeholder"


def lineage_wanted(env: dict[str, str]) -> bool:
    """Whether the OpenLineage provider would be enabled by this environment (its rule)."""

    def true(name: str) -> bool:
        return env.get(name, "").strip().lower() in ("1", "true", "t", "yes", "y", "on")

    if true("AIRFLOW__OPENLINEAGE__DISABLED") or true("OPENLINEAGE_DISABLED"):
        return False
    names = (
        "OPENLINEAGE_URL",
        "OPENLINEAGE_CONFIG",
        "AIRFLOW__OPENLINEAGE__TRANSPORT",
        "AIRFLOW__OPENLINEAGE__CONFIG_PATH",
        "AIRFLOW__OPENLINEAGE__CONFIG_CONN_ID",
    )
    return any(env.get(n) for n in names) or any(
        k.startswith("OPENLINEAGE__TRANSPORT") and v for k, v in env.items()
    )


def take_trace_input(trace_with: list[str] | None) -> int | None:
    """The trace file the harness gave strace as standard input (``-o /proc/self/fd/0``, see
    :func:`kfm_conformance.sandbox.seal_wrapper`), moved to a private descriptor, with
    ``/dev/null`` as standard input in its place; None when the run is not traced so. Nothing
    of the DAG run may hold the trace: the worker gets this process's standard input."""
    if not trace_with or "/proc/self/fd/0" not in trace_with:
        return None
    trace = os.dup(0)  # not inheritable
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return trace


def _attach_argv(trace_with: list[str], pid: int) -> list[str]:
    """The strace command that attaches to a held worker: the harness's strace command with
    ``-q`` (no "attached" lines on the run's stderr), without ``--seccomp-bpf`` (strace can
    filter in the kernel only for a command it starts), and ``-p PID``."""
    rest = [a for a in trace_with[1:] if a != "--seccomp-bpf"]
    return [trace_with[0], "-q", *rest, "-p", str(pid)]


def _wait_stopped(pid: int, timeout_s: float = 30.0) -> bool:
    """Wait until the held worker has stopped itself (state ``T``): a SIGCONT sent before its
    SIGSTOP would be lost, and the worker would stay stopped."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return False
        if state in ("T", "t"):
            return True
        time.sleep(0.001)
    return False


def _wait_traced(pid: int, tracer: Any, timeout_s: float = 30.0) -> bool:
    """Wait until ``pid`` has a tracer (strace has attached), or the tracer has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and tracer.poll() is None:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("TracerPid:") and line.split()[1] != "0":
                        return True
        except OSError:
            return False
        time.sleep(0.002)
    return False


def client(
    address: str,
    spec: Spec,
    trace_with: list[str] | None = None,
    trace_fd: int | None = None,
) -> int | None:
    """Run through the warm runner; None when there is none to use (then run cold).

    With ``trace_with`` the run's worker is held and traced by that strace command (see the
    comment above :func:`_attach_argv`'s section), writing to ``trace_fd`` when the harness
    sealed the trace (:func:`take_trace_input`)."""
    if _traced():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(_address(address))
    except OSError:
        sock.close()
        return None
    hello = json.dumps(
        {
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "spec": spec.fingerprint(),
            "lineage": lineage_wanted(dict(os.environ)),
            "hold": bool(trace_with),
        }
    ).encode()
    try:
        _send_frame(sock, hello, [0, 1, 2])
        reply = _recv_exact(sock, 4)
    except OSError:
        sock.close()
        return None  # the server went away before starting this run: run cold
    (code,) = _HELLO.unpack(reply)
    if code == 0xFFFFFFFF:  # the server refused (another DAG, say): run cold
        return None
    tracer = None
    try:
        if trace_with:
            (worker,) = _HELLO.unpack(_recv_exact(sock, 4))
            if not _wait_stopped(worker):
                sys.stderr.write("dag_runner: the warm worker did not stop to be traced\n")
                return 70
            tracer = subprocess.Popen(
                _attach_argv(trace_with, worker),
                stdin=subprocess.DEVNULL if trace_fd is None else trace_fd,
            )
            if trace_fd is not None:  # before the worker runs a step: only strace holds it
                os.close(trace_fd)
            if not _wait_traced(worker, tracer):
                sys.stderr.write("dag_runner: strace did not attach to the warm worker\n")
                return 70  # closing the connection makes the server kill the held worker
            os.kill(worker, signal.SIGCONT)
        final = _recv_exact(sock, 4)
    except OSError:
        sys.stderr.write("dag_runner: the warm runner died during the run\n")
        return 70
    finally:
        if tracer is not None:
            try:
                tracer.wait(timeout=60)  # the trace file is complete once strace is gone
            except Exception:
                tracer.kill()
    (status,) = _HELLO.unpack(final)
    if os.WIFSIGNALED(status):
        sys.stdout.flush()
        sys.stderr.flush()
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
        time.sleep(1)  # a signal that does not end this process: fall through to its code
    return os.waitstatus_to_exitcode(status) & 0xFF


def _join_client(pid: int) -> bool:
    """Enter the client's mount and PID namespaces when they differ from ours. True when this
    process must fork once more to be inside the PID namespace (only children enter one).

    Every namespace file is opened before the first ``setns``: inside the client's mount
    namespace, ``/proc`` is the client's and no longer shows this process."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    wanted: list[tuple[int, int]] = []
    fork_again = False
    try:
        for kind, flag in (("mnt", _CLONE_NEWNS), ("pid", _CLONE_NEWPID)):
            theirs = os.readlink(f"/proc/{pid}/ns/{kind}")
            mine = "pid_for_children" if kind == "pid" else kind
            if os.readlink(f"/proc/self/ns/{mine}") == theirs:
                continue
            wanted.append((os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY), flag))
            fork_again = fork_again or kind == "pid"
        for fd, flag in wanted:
            if libc.setns(fd, flag) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"cannot join the run's namespaces: {os.strerror(err)}")
    finally:
        for fd, _ in wanted:
            os.close(fd)
    return fork_again


class _Job:
    def __init__(self, conn: socket.socket, pid: int) -> None:
        self.conn = conn
        self.pid = pid


def _worker(
    conn: socket.socket, fds: list[int], hello: dict[str, Any], peer_pid: int, warm: Warm
) -> None:
    """In the forked child: become the client's run, then run the DAG once."""
    global _T0
    _T0 = (time.monotonic(), time.process_time())
    code = 70
    home: str | None = None
    try:
        os.setsid()
        if hello.get("hold"):  # a traced run: wait here until strace has attached
            os.kill(os.getpid(), signal.SIGSTOP)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        conn.close()
        if _join_client(peer_pid):
            child = os.fork()
            if child:
                _, status = os.waitpid(child, 0)
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        os.chdir(hello["cwd"])
        os.environ.clear()
        os.environ.update(hello["env"])
        tempfile.tempdir = None  # the run's TMPDIR, not the server's
        home = private_home()
        configure_environment(home, warm.spec.dag_file)
        if warm.synced_db_bytes is not None:
            with open(os.path.join(home, "airflow.db"), "wb") as handle:
                handle.write(warm.synced_db_bytes)
        elif not install_db(home, warm.spec.db_template):
            raise RuntimeError("no metadata DB to copy")
        _reconfigure_airflow()
        code = execute(warm.spec, warm, home)
    except BaseException as exc:  # the run must end with a code, whatever happened
        import traceback

        traceback.print_exc()
        sys.stderr.write(
            f"internal_error: the warm DAG runner failed: {type(exc).__name__}: {exc}\n"
        )
    flush_and_exit(code, home)


def _reconfigure_airflow() -> None:
    """Point the imported Airflow at this run's home, DB, lineage and trace settings."""
    from airflow import settings
    from airflow.configuration import conf

    settings.dispose_orm()
    settings.configure_vars()
    settings.configure_orm()
    from airflow._shared.observability.traces import configure_otel

    configure_otel(conf)
    try:
        from airflow.providers.openlineage import conf as ol_conf
        from airflow.providers.openlineage.plugins.listener import get_openlineage_listener

        for value in vars(ol_conf).values():
            clear = getattr(value, "cache_clear", None)
            if callable(clear):
                clear()
        adapter = getattr(get_openlineage_listener(), "adapter", None)
        if adapter is not None:
            adapter._client = None  # made on first use, from this run's environment
    except ImportError:
        pass


def serve(address: str, spec: Spec) -> None:
    """The warm runner's server: warm up once, then fork a worker per client."""
    import selectors

    home = private_home()
    configure_environment(home, spec.dag_file)
    os.environ["AIRFLOW__TRACES__OTEL_ON"] = "False"  # no exporter thread before the forks
    if not lineage_wanted(dict(os.environ)) and not os.environ.get(
        "AIRFLOW__OPENLINEAGE__DISABLED"
    ):
        os.environ["OPENLINEAGE_URL"] = _LINEAGE_PLACEHOLDER
    lineage = lineage_wanted(dict(os.environ))
    if not install_db(home, spec.db_template):
        from airflow.utils import db

        db.initdb()
    warm = Warm(spec)
    warm.sync_once(home)
    warm.prebuild_api()
    import airflow.models.dagrun  # noqa: F401 - what every run uses, imported once
    import airflow.providers.openlineage.plugins.listener  # noqa: F401
    import airflow.sdk.execution_time.supervisor  # noqa: F401
    import airflow.sdk.execution_time.task_runner  # noqa: F401
    import openlineage.client  # noqa: F401

    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError:
        pass
    import threading

    if threading.active_count() != 1:
        sys.stderr.write(
            f"dag_runner: warm runner has {threading.active_count()} threads before forking\n"
        )
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(_address(address))
    listener.listen(16)
    parent = os.getppid()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    jobs: dict[int, _Job] = {}
    fingerprint = spec.fingerprint()
    while True:
        for key, _ in selector.select(timeout=0.05):
            if key.data is None:
                conn, _ = listener.accept()
                try:
                    job = _accept(conn, warm, fingerprint, lineage)
                except OSError:
                    conn.close()
                    continue
                if job is not None:
                    jobs[job.pid] = job
                    selector.register(conn, selectors.EVENT_READ, job)
            else:
                job = key.data
                try:
                    gone = not job.conn.recv(1)
                except OSError:
                    gone = True
                if gone:  # the client died: kill its run
                    try:
                        os.killpg(job.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        while jobs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            job = jobs.pop(pid, None)
            if job is None:
                continue
            selector.unregister(job.conn)
            try:
                job.conn.sendall(_HELLO.pack(status & 0xFFFFFFFF))  # the raw wait status
            except OSError:
                pass
            job.conn.close()
        if os.getppid() != parent:  # the harness is gone
            for job in jobs.values():
                try:
                    os.killpg(job.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(home, ignore_errors=True)
            os._exit(0)


def _accept(conn: socket.socket, warm: Warm, fingerprint: str, lineage: bool) -> _Job | None:
    import array

    fds = array.array("i")
    header, ancillary, _, _ = conn.recvmsg(4, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if len(header) < 4:
        header += _recv_exact(conn, 4 - len(header))
    (size,) = _HELLO.unpack(header)
    hello = json.loads(_recv_exact(conn, size))
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    peer_pid, _, _ = struct.unpack("3i", creds)
    if hello.get("spec") != fingerprint or hello.get("lineage") != lineage or len(fds) < 3:
        for fd in fds:
            os.close(fd)
        conn.sendall(_HELLO.pack(0xFFFFFFFF))
        conn.close()
        return None
    conn.sendall(_HELLO.pack(0))
    pid = os.fork()
    if pid == 0:
        _worker(conn, list(fds), hello, peer_pid, warm)
    for fd in fds:
        os.close(fd)
    if hello.get("hold"):
        conn.sendall(_HELLO.pack(pid))  # the held worker, for the client's strace
    return _Job(conn, pid)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.make_db_template:
        make_db_template(args.make_db_template)
        return
    if not args.dag_file or not args.dag_id:
        sys.stderr.write("dag_runner: --dag-file and --dag-id are required\n")
        sys.exit(2)
    spec = Spec(args)
    if args.serve:
        serve(args.serve, spec)
        return
    address = args.client or os.environ.get("KFM_AIRFLOW_WARM_RUNNER")
    if address and not args.cold:
        trace_with = json.loads(args.trace_with) if args.trace_with else None
        trace_fd = take_trace_input(trace_with)
        code = client(address, spec, trace_with, trace_fd)
        if code is not None:
            sys.stdout.flush()
            os._exit(code)
        if trace_with:  # no warm worker to trace: the cold run, under the same strace
            if trace_fd is not None:
                os.dup2(trace_fd, 0)
            os.execv(trace_with[0], [*trace_with, sys.executable, *sys.argv, "--cold"])
    if args.cold and args.trace_with:  # strace's trace file, not the DAG run's input
        take_trace_input(json.loads(args.trace_with))
    cold_main(spec)


if __name__ == "__main__":
    main()
