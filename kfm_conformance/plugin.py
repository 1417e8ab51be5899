"""The pytest plugin: options, the per-scenario fixtures, and the hooks that turn outcomes into
verdicts with evidence.

It is registered through the ``pytest11`` entry point and stays inert unless ``--kfm-profile``
is given. The CLI is this plugin, configured: ``kfm-conformance certify`` runs pytest on the
packaged suite with these options, and both doors give the same results.

How a pytest outcome becomes a verdict:

- the scenario passed: ``pass``, or ``warn`` when a recommended check did not hold;
- it raised :class:`~kfm_conformance.verdict.GuaranteeViolation`: ``fail`` (``warn`` for a
  scenario that :mod:`kfm_conformance.levels` names a SHOULD, unless ``--kfm-strict``);
- it was skipped: ``skip``, with the reason and whether it was "not declared" or unavailable;
- anything else (an exception in harness code, a service that did not start, an undefined,
  ambiguous or pending step): ``error``. A scenario that "failed" while a real service it used
  had died is an ``error`` too, with the service's log tail in its evidence.

Real services (``--kfm-services``, or the profile's ``[services] provider``): the session
fixture ``kfm_services`` starts them once per session (per xdist worker) and stops them at the
end; see :mod:`kfm_conformance.services.runtime`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from kfm_conformance import airflow as airflow_runner
from kfm_conformance import channel, guarantees, isolation
from kfm_conformance import sandbox as sandbox_module
from kfm_conformance.capture.session import CaptureObserver, CaptureServices, schema_location
from kfm_conformance.faults import campaign_cache
from kfm_conformance.features import chosen_by, declared_id
from kfm_conformance.isolation import Isolation, IsolationChoice
from kfm_conformance.levels import scenario_is_recommended
from kfm_conformance.profile import Profile, load_profile
from kfm_conformance.redact import Redactor
from kfm_conformance.report.model import ScenarioResult, cap_evidence
from kfm_conformance.sandbox import Sandbox
from kfm_conformance.scenario import ScenarioContext
from kfm_conformance.services.collector_tap import CollectorTap
from kfm_conformance.services.runtime import ServiceSession
from kfm_conformance.services.scenario import ServiceObserver
from kfm_conformance.services.selection import ExternalSettings, parse_services
from kfm_conformance.upstream import Origin
from kfm_conformance.verdict import (
    ConfigurationError,
    GuaranteeViolation,
    Judge,
    NotApplicable,
    PreconditionFailed,
    SkipKind,
    Verdict,
)

CONTEXT_KEY = pytest.StashKey[ScenarioContext]()
STEPS_KEY = pytest.StashKey[list[dict[str, Any]]]()
SCENARIO_KEY = pytest.StashKey[dict[str, Any]]()
RESULT_KEY = pytest.StashKey[dict[str, Any]]()
SERVICE_OBSERVER_KEY = pytest.StashKey[ServiceObserver]()
PHASE_KEY = pytest.StashKey[str]()

#: Step modules that define the guarantees' vocabulary.
STEP_MODULES = (
    "kfm_conformance.steps.core",
    "kfm_conformance.steps.observability",
    "kfm_conformance.steps.provenance",
    "kfm_conformance.steps.faults",
    "kfm_conformance.steps.promotion",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kfm", "kfm-conformance: certify a pipeline")
    group.addoption("--kfm-profile", help="the pipeline profile (TOML) to certify")
    group.addoption(
        "--kfm-strict",
        action="store_true",
        default=False,
        help="recommended checks (SHOULDs) fail instead of warning",
    )
    group.addoption("--kfm-results", help="directory for per-scenario results (JSON lines)")
    group.addoption("--kfm-seed", type=int, default=None, help="seed for randomised choices")
    group.addoption(
        "--kfm-progress",
        action="store_true",
        default=False,
        help="print one line per scenario on stderr",
    )
    group.addoption("--kfm-work-dir", help="where scenario working directories are created")
    group.addoption(
        "--kfm-check",
        action="append",
        default=[],
        metavar="CHECK_ID",
        help="run only this scenario of its guarantee (GUARANTEE/SLUG, its @id: tag); "
        "repeat for more; other guarantees are left to -m",
    )
    group.addoption(
        "--kfm-suite",
        action="store_true",
        default=False,
        help="collect the packaged guarantees suite as well as the paths given (without paths, "
        "--kfm-profile collects it anyway)",
    )
    group.addoption(
        "--kfm-services",
        metavar="SPEC",
        help="who runs Marquez, lakeFS and the Collector: embedded (default), local, containers, "
        "external, auto, or per service, e.g. lakefs=local,collector=local,marquez=embedded "
        "(default: the profile's [services] provider)",
    )
    group.addoption(
        "--kfm-isolation",
        choices=isolation.CHOICES,
        default="auto",
        help=isolation.OPTION_HELP,
    )
    group.addoption(
        "--kfm-key-fd",
        type=int,
        default=None,
        help="(used by the CLI) an inherited descriptor holding the key that authenticates "
        "every result record",
    )
    group.addoption(
        "--kfm-openlineage-schemas",
        help="directory of the official OpenLineage JSON Schemas (default: the environment "
        "variable KFM_OPENLINEAGE_SCHEMAS); without one, spec validation is an error",
    )


def _active(config: pytest.Config) -> bool:
    return bool(config.getoption("--kfm-profile", default=None))


def pytest_configure(config: pytest.Config) -> None:
    for guarantee in guarantees.CATALOGUE:
        config.addinivalue_line("markers", f"{guarantee.id}: {guarantee.title}")
    if not _active(config):
        return
    try:
        profile = load_profile(config.getoption("--kfm-profile"))
        profile.check_command()
    except ConfigurationError as exc:
        raise pytest.UsageError(str(exc)) from None
    schemas, source = schema_location(config.getoption("--kfm-openlineage-schemas"))
    if schemas is not None and not schemas.is_dir():
        raise pytest.UsageError(
            f"OpenLineage schema cache ({source}) is not a directory: {schemas}"
        )
    try:
        parse_services(config.getoption("--kfm-services"), profile.services.get("provider"))
    except ConfigurationError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[PROFILE_KEY] = profile
    config.stash[ISOLATION_KEY] = _isolation_of(config)
    if not hasattr(config, "workerinput") and not os.environ.get(sandbox_module.RUN_TMP_ROOT_ENV):
        # A session of its own (not under the CLI, which makes one): the runs' temp
        # directories live in one place that goes at the session's end; xdist's workers,
        # started later, inherit it.
        root = tempfile.mkdtemp(prefix="kfm-runs-")
        os.environ[sandbox_module.RUN_TMP_ROOT_ENV] = root
        config.stash[RUN_TMP_ROOT_KEY] = Path(root)
    # The warm Airflow runner parses the DAG outside any sandbox: only for unisolated runs.
    airflow_runner.WARM_ALLOWED = not config.stash[ISOLATION_KEY].isolated
    config.stash[RESULT_KEY_KEY] = _result_key_of(config)
    results_dir = config.getoption("--kfm-results")
    if results_dir:
        sandbox_module.HIDDEN_PATHS.append(Path(results_dir).resolve())
        campaign_cache.use_results_directory(Path(results_dir).resolve())
    seed = config.getoption("--kfm-seed")
    config.stash[SEED_KEY] = seed if seed is not None else int(time.time()) % 1_000_000
    for module in STEP_MODULES:
        if not config.pluginmanager.has_plugin(module):
            config.pluginmanager.import_plugin(module)
    _collect_packaged_suite(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    root = config.stash.get(RUN_TMP_ROOT_KEY, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
        os.environ.pop(sandbox_module.RUN_TMP_ROOT_ENV, None)


PROFILE_KEY = pytest.StashKey[Profile]()
RUN_TMP_ROOT_KEY = pytest.StashKey[Path]()
SEED_KEY = pytest.StashKey[int]()
ISOLATION_KEY = pytest.StashKey[IsolationChoice]()
RESULT_KEY_KEY = pytest.StashKey[bytes]()


def _isolation_of(config: pytest.Config) -> IsolationChoice:
    """The isolation every run uses: the controller resolves it once, workers inherit it."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "kfm_isolation" in workerinput:
        data = json.loads(workerinput["kfm_isolation"])
        return IsolationChoice(
            Isolation(data["mode"]), data["requested"], data["reason"], data.get("tool")
        )
    try:
        return isolation.choose(config.getoption("--kfm-isolation"))
    except ConfigurationError as exc:
        raise pytest.UsageError(str(exc)) from None


def _result_key_of(config: pytest.Config) -> bytes:
    """The key that authenticates result records: read once from the CLI's pipe by the
    controller, handed to xdist workers over their channel; never in argv or the environment.
    Without the CLI (a team's own pytest) a fresh key is made: nobody reads the records back
    then but this process."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "kfm_result_key" in workerinput:
        return bytes.fromhex(workerinput["kfm_result_key"])
    fd = config.getoption("--kfm-key-fd")
    if fd is None:
        return channel.new_key()
    try:
        with os.fdopen(fd, "rb") as pipe:
            data = pipe.read(1024).strip()
        return bytes.fromhex(data.decode())
    except (OSError, ValueError):
        raise pytest.UsageError("--kfm-key-fd: no result key could be read") from None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: each worker gets the isolation choice and the result key over its channel."""
    config = node.config
    if ISOLATION_KEY in config.stash:
        node.workerinput["kfm_isolation"] = json.dumps(config.stash[ISOLATION_KEY].to_json())
    if RESULT_KEY_KEY in config.stash:
        node.workerinput["kfm_result_key"] = config.stash[RESULT_KEY_KEY].hex()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--kfm-check``: of a guarantee chosen through some of its scenarios, keep only them."""
    chosen: list[str] = config.getoption("--kfm-check", default=[]) or []
    if not chosen or not _active(config):
        return
    narrowed = {c.split("/", 1)[0] for c in chosen}
    kept, dropped = [], []
    for item in items:
        guarantee = _guarantee_of(item)
        # A scenario of a narrowed guarantee without a declared ID matches no check ID.
        check_id = _collected_entry(item).get("check_id") if guarantee in narrowed else None
        if chosen_by(str(check_id or f"{guarantee}/"), chosen):
            kept.append(item)
        else:
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_collection_finish(session: pytest.Session) -> None:
    """Record, authenticated, which scenarios this process collected: the CLI checks that
    every one of them has exactly one result."""
    config = session.config
    results_dir = config.getoption("--kfm-results", default=None)
    if not _active(config) or not results_dir or RESULT_KEY_KEY not in config.stash:
        return
    if hasattr(config, "workerinput") is False and config.pluginmanager.has_plugin("dsession"):
        return  # the xdist controller collects nothing; each worker records its own
    entries = [_collected_entry(item) for item in session.items]
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    path = Path(results_dir) / f"collection-{worker}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    channel.append(path, channel.seal(config.stash[RESULT_KEY_KEY], "collection", entries))


def _collected_entry(item: pytest.Item) -> dict[str, Any]:
    """A collected scenario's identity, as far as collection knows it."""
    guarantee = _guarantee_of(item)
    example = _example_of(item)
    template = _scenario_template(item)
    entry: dict[str, Any] = {"nodeid": item.nodeid, "guarantee": guarantee}
    if template is not None:
        tags = set(template.tags) | set(template.feature.tags)
        declared = declared_id(tags)
        entry["name"] = template.name
        entry["feature_file"] = Path(template.feature.filename).name
        entry["example"] = example
        if declared:
            entry["check_id"] = _check_id(guarantee, declared, example)
        recommended = declared is not None and scenario_is_recommended(entry["check_id"])
        entry["kind"] = "recommended" if recommended else "required"
    return entry


def _scenario_template(item: pytest.Item) -> Any:
    try:
        from pytest_bdd.scenario import scenario_wrapper_template_registry
    except ImportError:  # pragma: no cover - pytest-bdd internals moved
        return None
    function = getattr(item, "function", None)
    return scenario_wrapper_template_registry.get(function) if function else None


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def kfm_profile(pytestconfig: pytest.Config) -> Profile:
    """The profile under test (``--kfm-profile``)."""
    if PROFILE_KEY not in pytestconfig.stash:
        pytest.fail("kfm-conformance scenarios need --kfm-profile FILE", pytrace=False)
    return pytestconfig.stash[PROFILE_KEY]


@pytest.fixture(scope="session")
def kfm_seed(pytestconfig: pytest.Config) -> int:
    return pytestconfig.stash.get(SEED_KEY, 0)


@pytest.fixture(scope="session")
def kfm_work_root(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    option = pytestconfig.getoption("--kfm-work-dir")
    if option:
        root = Path(option)
        root.mkdir(parents=True, exist_ok=True)
        return root
    return tmp_path_factory.mktemp("kfm-work")


@pytest.fixture
def kfm_origin() -> Generator[Origin, None, None]:
    """A fresh scripted origin for the scenario."""
    origin = Origin()
    yield origin
    origin.close()


@pytest.fixture(scope="session")
def kfm_services(pytestconfig: pytest.Config) -> Generator[ServiceSession | None, None, None]:
    """The real services chosen with ``--kfm-services`` (or the profile's ``[services]``),
    started once per session (xdist worker) and stopped at its end; None when every service is
    embedded. A service that fails to start is remembered, not raised: the scenarios that need
    it are errors."""
    profile = pytestconfig.stash.get(PROFILE_KEY, None)
    profile_services = profile.services if profile is not None else {}
    selection = parse_services(
        pytestconfig.getoption("--kfm-services", default=None), profile_services.get("provider")
    )
    if not selection.real():
        yield None
        return
    session = ServiceSession(selection, ExternalSettings.from_sources(profile_services))
    try:
        yield session.start()
    finally:
        session.stop()


@pytest.fixture(scope="session")
def kfm_capture(
    pytestconfig: pytest.Config, kfm_services: ServiceSession | None
) -> Generator[CaptureServices, None, None]:
    """The embedded lineage sink and OTLP receiver, started once per session (xdist worker);
    with a real Collector the pipeline exports to it, with a real Marquez events are teed."""
    endpoints = kfm_services.endpoints if kfm_services is not None else None
    collector = marquez = None
    if kfm_services is not None and endpoints is not None:
        if kfm_services.is_running("collector") and endpoints.span_files:
            collector = CollectorTap(endpoints.span_files)
        if kfm_services.is_running("marquez"):
            marquez = endpoints.marquez_url
    services = CaptureServices(
        schemas_option=pytestconfig.getoption("--kfm-openlineage-schemas"),
        forward_lineage_to=marquez,
        collector=collector,
        collector_endpoint=endpoints.otlp_http_endpoint if endpoints else None,
    )
    yield services
    services.close()


@pytest.fixture
def kfm_observer(
    request: pytest.FixtureRequest, kfm_capture: CaptureServices, kfm_profile: Profile
) -> CaptureObserver:
    """The scenario's slices of what the capture services received, one per run."""
    markers = {m.name for m in request.node.iter_markers()}
    return CaptureObserver(
        kfm_capture,
        scenario_id=f"{_slug(request.node.name)[:40]}-{uuid.uuid4().hex[:12]}",
        service_name=kfm_profile.name,
        full_evidence=bool(markers & {"lineage", "telemetry"}),
        wait_for_spans="telemetry" in markers,
    )


@pytest.fixture
def kfm_service_observer(
    request: pytest.FixtureRequest,
    kfm_services: ServiceSession | None,
    kfm_observer: CaptureObserver,
) -> ServiceObserver:
    """The scenario's use of the real services: required, health-checked, recorded."""
    markers = {m.name for m in request.node.iter_markers()}
    observer = ServiceObserver(kfm_services, kfm_observer, markers)
    request.node.stash[SERVICE_OBSERVER_KEY] = observer
    return observer


@pytest.fixture
def kfm_env(kfm_observer: CaptureObserver) -> dict[str, str]:
    """Environment the capture services add to every run of the scenario: OPENLINEAGE_URL,
    OPENLINEAGE_NAMESPACE and the standard OTEL_* variables."""
    return kfm_observer.env()


@pytest.fixture
def kfm(
    request: pytest.FixtureRequest,
    kfm_profile: Profile,
    kfm_origin: Origin,
    kfm_seed: int,
    kfm_work_root: Path,
    kfm_env: dict[str, str],
    kfm_observer: CaptureObserver,
    kfm_service_observer: ServiceObserver,
) -> ScenarioContext:
    """The scenario's context: profile, origin, sandbox, judge and evidence."""
    slug = _slug(request.node.name)[:60]
    counter = iter(range(1, 1000))

    def make_sandbox() -> Sandbox:
        root = Path(
            os.path.join(kfm_work_root, f"{slug}-{os.getpid()}-{id(request.node)}-{next(counter)}")
        )
        return Sandbox(
            kfm_profile, root, isolation_choice=request.config.stash.get(ISOLATION_KEY, None)
        )

    context = ScenarioContext(
        profile=kfm_profile,
        origin=kfm_origin,
        sandbox=make_sandbox(),
        judge=Judge(
            strict=bool(request.config.getoption("--kfm-strict")),
            phase=request.node.stash.get(PHASE_KEY, "") or None,
        ),
        seed=kfm_seed,
        make_sandbox=make_sandbox,
        extra_env=dict(kfm_env),
        run_observers=[kfm_observer, kfm_service_observer],
    )
    kfm_service_observer.record(context)
    request.node.stash[CONTEXT_KEY] = context
    return context


# -- pytest-bdd hooks: which scenario, which steps ----------------------------------------------
def pytest_bdd_apply_tag(tag: str, function: Any) -> bool | None:
    """``@id:`` tags declare check IDs; they are read from the scenario, not made markers."""
    return True if tag.startswith("id:") else None


def pytest_bdd_before_scenario(request: pytest.FixtureRequest, feature: Any, scenario: Any) -> None:
    request.node.stash[SCENARIO_KEY] = {
        "feature": feature.name,
        "feature_file": Path(feature.filename).name,
        "scenario": scenario.name,
        "tags": sorted(set(scenario.tags) | set(feature.tags)),
    }
    request.node.stash[STEPS_KEY] = []


def pytest_bdd_before_step(
    request: pytest.FixtureRequest, feature: Any, scenario: Any, step: Any, step_func: Any
) -> None:
    """The judge knows which kind of step runs: a broken Given is a failed precondition."""
    phase = str(getattr(step, "type", "") or "").lower() or None
    request.node.stash[PHASE_KEY] = phase or ""
    context = request.node.stash.get(CONTEXT_KEY, None)
    if context is not None:  # the first step makes the context itself (kfm fixture)
        context.judge.phase = phase


def pytest_bdd_after_step(
    request: pytest.FixtureRequest, feature: Any, scenario: Any, step: Any, **_: Any
) -> None:
    request.node.stash.setdefault(STEPS_KEY, []).append(
        {"keyword": step.keyword, "text": step.name, "status": "passed"}
    )


def pytest_bdd_step_error(
    request: pytest.FixtureRequest,
    feature: Any,
    scenario: Any,
    step: Any,
    exception: BaseException,
    **_: Any,
) -> None:
    request.node.stash.setdefault(STEPS_KEY, []).append(
        {"keyword": step.keyword, "text": step.name, "status": "failed"}
    )


def pytest_bdd_step_func_lookup_error(
    request: pytest.FixtureRequest, feature: Any, scenario: Any, step: Any, exception: Exception
) -> None:
    request.node.stash.setdefault(STEPS_KEY, []).append(
        {"keyword": step.keyword, "text": step.name, "status": "undefined"}
    )


# -- outcomes into verdicts ---------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A scenario that does not apply raises NotApplicable; it becomes a skip with its kind.
    A scenario whose steps all ran but whose independent checks did not all hold fails here,
    with every finding kept."""
    try:
        result = yield
    except NotApplicable as exc:
        context = item.stash.get(CONTEXT_KEY, None)  # made lazily, by the first step
        if context is not None:
            context.skip_kind = exc.kind
        pytest.skip(exc.reason)
    context = item.stash.get(CONTEXT_KEY, None)
    if context is not None:
        context.judge.phase = None
        context.judge.raise_deferred()
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not _active(item.config) or (SCENARIO_KEY not in item.stash and report.when != "setup"):
        return report
    if (report.when == "setup" and not report.passed) or report.when == "call":
        result = _scenario_result(item, call, report)
        item.stash[RESULT_KEY] = result
        report.user_properties.append(("kfm_verdict", result["verdict"]))
        report.user_properties.append(("kfm_check_id", result["check_id"]))
    if report.when == "teardown" and RESULT_KEY in item.stash:
        _emit(item, item.stash[RESULT_KEY])
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    verdict = dict(getattr(report, "user_properties", ())).get("kfm_verdict")
    if report.when != "call" or verdict is None:
        return None
    if verdict == "warn":
        return "warned", "W", ("WARN", {"yellow": True})
    if verdict == "error" and report.failed:
        return "error", "E", ("ERROR", {"red": True})
    return None


def _scenario_result(
    item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport
) -> dict[str, Any]:
    info = item.stash.get(SCENARIO_KEY, {})
    context = item.stash.get(CONTEXT_KEY, None)
    guarantee = _guarantee_of(item)
    example = _example_of(item)
    declared = declared_id(info.get("tags", []))
    scenario_name = info.get("scenario", item.name)
    check_id = _check_id(guarantee, declared or _slug(scenario_name), example)
    recommended = scenario_is_recommended(check_id)
    strict = bool(item.config.getoption("--kfm-strict"))
    message = ""
    skip_kind: str | None = None
    precondition = False
    excinfo = call.excinfo
    if report.skipped:
        verdict = Verdict.SKIP
        message = _skip_reason(report)
        kind = getattr(context, "skip_kind", None) if context else None
        skip_kind = str(kind or _skip_kind_from_reason(message))
    elif report.passed:
        warnings = context.judge.warnings if context else []
        verdict = Verdict.WARN if warnings else Verdict.PASS
        message = "; ".join(w.message for w in warnings)
    elif excinfo is not None and isinstance(excinfo.value, GuaranteeViolation):
        verdict = Verdict.WARN if recommended and not strict else Verdict.FAIL
        message = _failure_message(context, excinfo.value)
        precondition = isinstance(excinfo.value, PreconditionFailed)
        dead = _dead_service(item, context)
        if dead:  # a service the scenario used died: never blamed on the pipeline
            verdict, message = Verdict.ERROR, f"harness error: {dead} (the run had: {message})"
    else:
        verdict = Verdict.ERROR
        message = _error_message(report, excinfo)
    evidence: dict[str, Any] = {}
    if context is not None:
        try:
            evidence = context.to_evidence()
        except Exception as exc:  # the evidence itself broke: keep the verdict, say so
            evidence = {"evidence_error": f"{type(exc).__name__}: {exc}"}
    if verdict is Verdict.ERROR and excinfo is not None:
        evidence["harness_traceback"] = "".join(
            traceback.format_exception(excinfo.type, excinfo.value, excinfo.tb, limit=8)
        )[-6000:]
    if declared is None and verdict is not Verdict.ERROR:
        verdict = Verdict.ERROR
        message = f"harness error: scenario {scenario_name!r} declares no @id: check ID"
    return ScenarioResult(
        check_id=check_id,
        guarantee=guarantee,
        feature_file=info.get("feature_file"),
        name=scenario_name,
        example=example,
        kind="recommended" if recommended else "required",
        verdict=str(verdict),
        message=message,
        skip_kind=skip_kind,
        duration_s=round(report.duration, 3),
        steps=item.stash.get(STEPS_KEY, []),
        findings=[f.to_json() for f in context.judge.findings] if context else [],
        precondition_failed=precondition,
        evidence=cap_evidence(evidence),
        nodeid=item.nodeid,
    ).to_json()


def _failure_message(context: ScenarioContext | None, raised: GuaranteeViolation) -> str:
    """Every binding failure of the scenario, the one that stopped it included."""
    failures = context.judge.binding_failures if context is not None else []
    messages = list(dict.fromkeys(f.message for f in failures)) or [str(raised)]
    if str(raised) not in messages:
        messages.append(str(raised))
    text = "; ".join(messages[:6])
    if len(messages) > 6:
        text += f"; and {len(messages) - 6} more"
    if isinstance(raised, PreconditionFailed):
        text = f"precondition failed: {text}"
    return text


def _dead_service(item: pytest.Item, context: ScenarioContext | None) -> str:
    """The first real service the scenario used that no longer answers ("" when none)."""
    observer = item.stash.get(SERVICE_OBSERVER_KEY, None)
    if observer is None:
        return ""
    problems = observer.dead_services()
    if not problems:
        return ""
    if context is not None:
        context.evidence["service_failure"] = problems[0].evidence()
    return str(problems[0])


def _emit(item: pytest.Item, result: dict[str, Any]) -> None:
    config = item.config
    profile = config.stash.get(PROFILE_KEY, None)
    redactor = Redactor.for_profile(profile) if profile else Redactor([])
    result = redactor.redact(json.loads(json.dumps(result, default=str)))
    results_dir = config.getoption("--kfm-results")
    if results_dir and RESULT_KEY_KEY in config.stash:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        path = Path(results_dir) / f"scenarios-{worker}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        channel.append(path, channel.seal(config.stash[RESULT_KEY_KEY], "result", result))
    if config.getoption("--kfm-progress"):
        text = result["message"].splitlines()[0][:120] if result["message"] else ""
        print(
            f"{result['verdict'].upper():5} {result['check_id']}"
            + (f" — {text}" if text else "")
            + f" ({result['duration_s']:.1f}s)",
            file=sys.__stderr__,  # past pytest's capture: progress is for the person waiting
            flush=True,
        )


# -- the packaged suite in a team's own pytest --------------------------------------------------
#: The packaged suite: every feature file bound to pytest-bdd.
PACKAGED_SUITE = Path(__file__).resolve().parent / "suite" / "test_guarantees.py"


def _collect_packaged_suite(config: pytest.Config) -> None:
    """``pytest --kfm-profile FILE`` collects the packaged suite when the invocation names no
    paths of its own (testpaths and the current directory are then replaced by it);
    ``--kfm-suite`` adds it to the paths given. The CLI names the suite itself."""
    named_paths = config.args_source == pytest.Config.ArgsSource.ARGS
    if named_paths and not config.getoption("--kfm-suite"):
        return
    suite = str(PACKAGED_SUITE)
    if any(Path(arg.split("::")[0]).resolve() == PACKAGED_SUITE for arg in config.args):
        return
    config.args = [*config.args, suite] if named_paths else [suite]


# -- naming ------------------------------------------------------------------------------------
def _guarantee_of(item: pytest.Item) -> str:
    names = {m.name for m in item.iter_markers()}
    for guarantee in guarantees.IDS:
        if guarantee in names:
            return guarantee
    return "unknown"


def _example_of(item: pytest.Item) -> dict[str, str] | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    example = callspec.params.get("_pytest_bdd_example")
    return dict(example) if example else None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _check_id(guarantee: str, declared: str, example: dict[str, str] | None) -> str:
    """Stable check ID: ``guarantee/<declared @id>`` plus the example row for outlines."""
    check = f"{guarantee}/{declared}"
    if example:
        values = ",".join(_slug(str(v)) or "-" for v in example.values())
        check += f"[{values}]"
    return check


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr or "")


def _skip_kind_from_reason(reason: str) -> SkipKind:
    return SkipKind.NOT_DECLARED if reason.startswith("not declared") else SkipKind.UNAVAILABLE


def _error_message(report: pytest.TestReport, excinfo: pytest.ExceptionInfo[Any] | None) -> str:
    if excinfo is None:
        return f"harness error during {report.when}"
    name = excinfo.type.__name__
    text = str(excinfo.value).strip().splitlines()[0] if str(excinfo.value).strip() else ""
    where = "" if report.when == "call" else f" during {report.when}"
    return f"harness error{where}: {name}: {text}"[:500]
