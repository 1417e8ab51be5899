"""The pytest plugin: options, the per-scenario fixtures, and the hooks that turn outcomes into
verdicts with evidence.

It is registered through the ``pytest11`` entry point and stays inert unless ``--kfm-profile``
is given. The CLI is this plugin, configured: ``kfm-conformance certify`` runs pytest on the
packaged suite with these options, and both doors give the same results.

How a pytest outcome becomes a verdict:

- the scenario passed: ``pass``, or ``warn`` when a recommended check did not hold;
- it raised :class:`~kfm_conformance.verdict.GuaranteeViolation`: ``fail`` (``warn`` for a
  scenario tagged ``@recommended``, unless ``--kfm-strict``);
- it was skipped: ``skip``, with the reason and whether it was "not declared" or unavailable;
- anything else (an exception in harness code, a service that did not start, an undefined,
  ambiguous or pending step): ``error``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from kfm_conformance import guarantees
from kfm_conformance.profile import Profile, load_profile
from kfm_conformance.redact import Redactor
from kfm_conformance.sandbox import Sandbox
from kfm_conformance.scenario import ScenarioContext
from kfm_conformance.upstream import Origin
from kfm_conformance.verdict import (
    ConfigurationError,
    GuaranteeViolation,
    Judge,
    NotApplicable,
    SkipKind,
    Verdict,
)

CONTEXT_KEY = pytest.StashKey[ScenarioContext]()
STEPS_KEY = pytest.StashKey[list[dict[str, Any]]]()
SCENARIO_KEY = pytest.StashKey[dict[str, Any]]()
RESULT_KEY = pytest.StashKey[dict[str, Any]]()

#: Step modules that define the guarantees' vocabulary.
STEP_MODULES = ("kfm_conformance.steps.core",)


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


def _active(config: pytest.Config) -> bool:
    return bool(config.getoption("--kfm-profile", default=None))


def pytest_configure(config: pytest.Config) -> None:
    for guarantee in guarantees.CATALOGUE:
        config.addinivalue_line("markers", f"{guarantee.id}: {guarantee.title}")
    config.addinivalue_line("markers", "recommended: a SHOULD; warns instead of failing")
    if not _active(config):
        return
    try:
        profile = load_profile(config.getoption("--kfm-profile"))
        profile.check_command()
    except ConfigurationError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[PROFILE_KEY] = profile
    seed = config.getoption("--kfm-seed")
    config.stash[SEED_KEY] = seed if seed is not None else int(time.time()) % 1_000_000
    for module in STEP_MODULES:
        if not config.pluginmanager.has_plugin(module):
            config.pluginmanager.import_plugin(module)


PROFILE_KEY = pytest.StashKey[Profile]()
SEED_KEY = pytest.StashKey[int]()


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


@pytest.fixture
def kfm_env() -> dict[str, str]:
    """Environment the capture services add to every run of the scenario."""
    return {}


@pytest.fixture
def kfm(
    request: pytest.FixtureRequest,
    kfm_profile: Profile,
    kfm_origin: Origin,
    kfm_seed: int,
    kfm_work_root: Path,
    kfm_env: dict[str, str],
) -> ScenarioContext:
    """The scenario's context: profile, origin, sandbox, judge and evidence."""
    slug = _slug(request.node.name)[:60]
    counter = iter(range(1, 1000))

    def make_sandbox() -> Sandbox:
        root = Path(
            os.path.join(kfm_work_root, f"{slug}-{os.getpid()}-{id(request.node)}-{next(counter)}")
        )
        return Sandbox(kfm_profile, root)

    context = ScenarioContext(
        profile=kfm_profile,
        origin=kfm_origin,
        sandbox=make_sandbox(),
        judge=Judge(strict=bool(request.config.getoption("--kfm-strict"))),
        seed=kfm_seed,
        make_sandbox=make_sandbox,
        extra_env=dict(kfm_env),
    )
    request.node.stash[CONTEXT_KEY] = context
    return context


# -- pytest-bdd hooks: which scenario, which steps ----------------------------------------------
def pytest_bdd_before_scenario(request: pytest.FixtureRequest, feature: Any, scenario: Any) -> None:
    request.node.stash[SCENARIO_KEY] = {
        "feature": feature.name,
        "feature_file": Path(feature.filename).name,
        "scenario": scenario.name,
        "tags": sorted(set(scenario.tags) | set(feature.tags)),
    }
    request.node.stash[STEPS_KEY] = []


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
    """A scenario that does not apply raises NotApplicable; it becomes a skip with its kind."""
    try:
        return (yield)
    except NotApplicable as exc:
        context = item.stash.get(CONTEXT_KEY, None)
        if context is not None:
            context.skip_kind = exc.kind
        pytest.skip(exc.reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not _active(item.config) or (SCENARIO_KEY not in item.stash and report.when != "setup"):
        return
    if (report.when == "setup" and not report.passed) or report.when == "call":
        result = _scenario_result(item, call, report)
        item.stash[RESULT_KEY] = result
        report.user_properties.append(("kfm_verdict", result["verdict"]))
        report.user_properties.append(("kfm_check_id", result["check_id"]))
    if report.when == "teardown" and RESULT_KEY in item.stash:
        _emit(item, item.stash[RESULT_KEY])


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    verdict = dict(report.user_properties).get("kfm_verdict")
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
    recommended = "recommended" in info.get("tags", []) or any(
        m.name == "recommended" for m in item.iter_markers()
    )
    strict = bool(item.config.getoption("--kfm-strict"))
    message = ""
    skip_kind: str | None = None
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
        message = str(excinfo.value)
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
    scenario_name = info.get("scenario", item.name)
    return {
        "check_id": _check_id(guarantee, scenario_name, example),
        "guarantee": guarantee,
        "feature_file": info.get("feature_file"),
        "name": scenario_name,
        "example": example,
        "kind": "recommended" if recommended else "required",
        "verdict": str(verdict),
        "message": message,
        "skip_kind": skip_kind,
        "duration_s": round(report.duration, 3),
        "steps": item.stash.get(STEPS_KEY, []),
        "findings": [f.to_json() for f in context.judge.findings] if context else [],
        "evidence": evidence,
        "nodeid": item.nodeid,
    }


def _emit(item: pytest.Item, result: dict[str, Any]) -> None:
    config = item.config
    profile = config.stash.get(PROFILE_KEY, None)
    redactor = Redactor.for_profile(profile) if profile else Redactor([])
    line = redactor.redact_text(json.dumps(result, default=str, sort_keys=True))
    results_dir = config.getoption("--kfm-results")
    if results_dir:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        path = Path(results_dir) / f"scenarios-{worker}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    if config.getoption("--kfm-progress"):
        text = result["message"].splitlines()[0][:120] if result["message"] else ""
        print(
            f"{result['verdict'].upper():5} {result['check_id']}"
            + (f" — {text}" if text else "")
            + f" ({result['duration_s']:.1f}s)",
            file=sys.__stderr__,  # past pytest's capture: progress is for the person waiting
            flush=True,
        )


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


def _check_id(guarantee: str, scenario: str, example: dict[str, str] | None) -> str:
    """Stable check ID: ``guarantee/scenario-slug`` plus the example row for outlines."""
    check = f"{guarantee}/{_slug(scenario)}"
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
