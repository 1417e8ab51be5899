"""The ``promotion`` guarantee: branch-based promotion into lakeFS, judged from the outside.

The blueprint promises a "lakeFS-safe promotion flow": a run writes on a branch of its own,
commits, validates, and merges into the target branch in one atomic step, so the target never
shows a partial or invalid publication. The harness checks that through the lakeFS REST API
only (:class:`~kfm_conformance.services.lakefs_api.LakeFSAPI`), never through the pipeline's
own client:

* :func:`require_target` (the scenario's ``Given``): the profile must declare ``[lakefs]``
  (else the scenario is skipped as *not declared*); the chosen provider must run lakeFS
  (``embedded`` has none: skipped as *unavailable*, which blocks certification; a lakeFS
  that did not start is an ``error``). Then a fresh repository with a ``main`` branch is
  created for the scenario, and the pipeline is given its endpoint, credentials, repository
  and target branch through the environment variables the profile names. The endpoint is a
  recording proxy (:class:`~kfm_conformance.services.lakefs_proxy.LakeFSProxy`), so the
  evidence shows every request the pipeline sent to lakeFS.
* :class:`PromotionObserver` records, around every run, main's head, its objects (path and
  checksum), its uncommitted changes, the branches, and the pipeline's lakeFS requests.
* :class:`MainWatcher` reads main's output object again and again while a run goes on, as a
  reader of the target branch would.
* the ``judge_*`` functions turn that evidence into findings for the scenario's judge.

An output on main is *complete and valid* when it can be read as the output's format and
holds exactly the rows, in order, of one of the versions the upstream served.
"""

from __future__ import annotations

import hashlib
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfm_conformance import outputs
from kfm_conformance.redact import register_secret
from kfm_conformance.services.base import ServiceError
from kfm_conformance.services.lakefs_api import Commit, LakeFSAPI
from kfm_conformance.services.lakefs_proxy import LakeFSProxy, ProxyCall
from kfm_conformance.verdict import HarnessError, NotApplicable, SkipKind

if TYPE_CHECKING:
    from kfm_conformance.sandbox import RunResult
    from kfm_conformance.scenario import ScenarioContext
    from kfm_conformance.services.runtime import ServiceSession
    from kfm_conformance.services.scenario import ServiceObserver

__all__ = [
    "MainWatcher",
    "PromotionObserver",
    "PromotionTarget",
    "require_target",
]

TARGET_BRANCH = "main"
WATCH_INTERVAL_S = 0.02


# -- the target ------------------------------------------------------------------------------
@dataclass
class PromotionTarget:
    """The scenario's repository, its target branch, and how the pipeline reaches it."""

    api: LakeFSAPI
    repository: str
    branch: str
    object_path: str
    proxy: LakeFSProxy
    env: dict[str, str]
    lakefs_version: str
    validity: dict[str, tuple[bool, str]] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "branch": self.branch,
            "object_path": self.object_path,
            "lakefs_version": self.lakefs_version,
            "env_names": sorted(self.env),
        }

    def close(self) -> None:
        self.proxy.close()
        try:
            self.api.delete_repository(self.repository)
        except ServiceError:
            pass  # the service's data dir goes with it at the end of the session


def declared(profile_raw: dict[str, Any]) -> bool:
    return isinstance(profile_raw.get("lakefs"), dict)


def require_target(
    kfm: ScenarioContext,
    session: ServiceSession | None,
    observer: ServiceObserver | None,
) -> PromotionTarget:
    """The scenario's lakeFS target (see the module docstring); skips or errors when none."""
    profile = kfm.profile
    if not declared(profile.raw):
        raise NotApplicable(
            "not declared: the profile declares no [lakefs] table, so the pipeline promises no "
            "lakeFS promotion",
            SkipKind.NOT_DECLARED,
        )
    provider = session.provider_of("lakefs") if session is not None else "embedded"
    if provider == "embedded":
        raise NotApplicable(
            "unavailable: no lakeFS service: the embedded services have none; choose one with "
            "--services lakefs=local (or containers, external)",
            SkipKind.UNAVAILABLE,
        )
    assert session is not None
    problem = session.unavailable("lakefs")
    if problem is not None:
        kfm.evidence["service_failure"] = problem.evidence()
        raise problem
    access = session.endpoints.lakefs
    if access is None:  # pragma: no cover - running implies endpoints
        raise HarnessError("lakeFS is running but has no endpoint")
    if observer is not None:
        observer.use(kfm, "lakefs")
    api = LakeFSAPI(access)
    repository = f"kfm-{uuid.uuid4().hex[:16]}"
    prefix = session.external.lakefs_namespace_prefix if provider == "external" else "local://"
    namespace = prefix + repository if prefix.endswith("/") else f"{prefix}/{repository}"
    api.create_repository(repository, namespace, TARGET_BRANCH)
    proxy = LakeFSProxy(access.endpoint)
    names = profile.lakefs_env
    env = {
        names["endpoint_env"]: proxy.url,
        names["access_key_id_env"]: access.access_key_id,
        names["secret_access_key_env"]: access.secret_access_key,
        names["repository_env"]: repository,
        names["branch_env"]: TARGET_BRANCH,
    }
    register_secret(access.access_key_id)
    register_secret(access.secret_access_key)
    object_path = str(profile.raw["lakefs"].get("output_path") or profile.output).lstrip("/")
    target = PromotionTarget(
        api=api,
        repository=repository,
        branch=TARGET_BRANCH,
        object_path=object_path,
        proxy=proxy,
        env=env,
        lakefs_version=api.version(),
    )
    kfm.extra_env.update(env)
    kfm.evidence["promotion"] = {**target.describe(), "initial_head": api.head(repository, "main")}
    return target


# -- validity of what main shows -------------------------------------------------------------
def _valid_bodies(kfm: ScenarioContext) -> list[tuple[int, bytes]]:
    """(version number, JSON body) of every served version that is a non-empty array."""
    import json

    out = []
    for version in kfm.versions:
        try:
            rows = json.loads(version.resource.body)
        except ValueError:
            continue
        if isinstance(rows, list) and rows:
            out.append((version.number, version.resource.body))
    return out


def judge_content(kfm: ScenarioContext, target: PromotionTarget, data: bytes) -> tuple[bool, str]:
    """Whether ``data`` is a complete, valid output: one served version's rows, in order."""
    digest = hashlib.sha256(data).hexdigest()
    cached = target.validity.get(digest)
    if cached is not None:
        return cached
    suffix = Path(target.object_path).suffix or Path(kfm.profile.output).suffix
    with tempfile.TemporaryDirectory(prefix="kfm-lakefs-read-") as tmp:
        path = Path(tmp) / f"object{suffix}"
        path.write_bytes(data)
        verdict: tuple[bool, str] = (False, "it matches no version the upstream served")
        for number, body in _valid_bodies(kfm):
            try:
                comparison = outputs.compare_rows(body, path)
            except outputs.UnreadableOutput as exc:
                verdict = (False, f"unreadable ({len(data)} bytes): {exc}")
                break
            if comparison.same:
                verdict = (True, f"version {number} ({comparison.observed_rows} rows)")
                break
    target.validity[digest] = verdict
    return verdict


# -- around every run ------------------------------------------------------------------------
@dataclass
class MainState:
    """main at one moment: head commit, objects (path -> checksum), uncommitted changes."""

    head: str
    objects: dict[str, str]
    uncommitted: list[dict[str, Any]]
    output_sha256: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "objects": self.objects,
            "uncommitted": self.uncommitted,
            "output_sha256": self.output_sha256,
        }


def main_state(target: PromotionTarget) -> MainState:
    api, repo = target.api, target.repository
    return MainState(
        head=api.head(repo, target.branch),
        objects=api.listing(repo, target.branch),
        uncommitted=api.uncommitted(repo, target.branch),
        output_sha256=api.sha256(repo, target.branch, target.object_path),
    )


@dataclass
class PromotionRun:
    label: str
    before: MainState
    after: MainState | None = None
    branches_after: dict[str, str] = field(default_factory=dict)
    calls: list[ProxyCall] = field(default_factory=list)
    exit_code: int | None = None
    started_at: float = 0.0

    @property
    def writes(self) -> list[ProxyCall]:
        return [c for c in self.calls if c.write is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "exit_code": self.exit_code,
            "main_before": self.before.to_json(),
            "main_after": self.after.to_json() if self.after else None,
            "branches_after": self.branches_after,
            "lakefs_requests": [
                f"{c.method} {c.path}"
                + (f"?path={c.object_path}" if c.object_path else "")
                + f" -> {c.status}"
                for c in self.calls
            ],
        }


class PromotionObserver:
    """Records main's state and the pipeline's lakeFS requests around every run."""

    def __init__(self, target: PromotionTarget) -> None:
        self.target = target
        self.runs: list[PromotionRun] = []
        self._current: PromotionRun | None = None

    def before_run(self, context: ScenarioContext, label: str | None) -> None:
        self._current = PromotionRun(
            label=label or "", before=main_state(self.target), started_at=time.time()
        )

    def after_run(self, context: ScenarioContext, result: RunResult) -> None:
        run = self._current
        if run is None:
            raise HarnessError("a run ended that the promotion observer never saw start")
        self._current = None
        run.label = result.label
        run.exit_code = result.exit_code
        run.calls = self.target.proxy.calls_between(run.started_at, time.time())
        run.after = main_state(self.target)
        run.branches_after = self.target.api.branches(self.target.repository)
        self.runs.append(run)
        runs: list[Any] = context.evidence.setdefault("promotion", {}).setdefault("runs", [])
        runs.append(run.to_json())

    @property
    def last(self) -> PromotionRun:
        if not self.runs:
            raise HarnessError("no run of this scenario was seen by the promotion observer")
        return self.runs[-1]

    def last_publication(self) -> PromotionRun | None:
        for run in reversed(self.runs):
            if run.after is not None and run.after.head != run.before.head:
                return run
        return None


class MainWatcher:
    """A reader of the target branch: polls main's output object while a run goes on."""

    def __init__(self, kfm: ScenarioContext, target: PromotionTarget) -> None:
        self.kfm = kfm
        self.target = target
        self.seen: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kfm-main-watcher", daemon=True)

    def __enter__(self) -> MainWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._poll()  # the state the run left

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception as exc:  # noqa: BLE001 - the reader reports, the judge decides
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if len(self.errors) > 20:
                    return
            time.sleep(WATCH_INTERVAL_S)

    def _poll(self) -> None:
        api, repo, path = self.target.api, self.target.repository, self.target.object_path
        stat = api.stat(repo, self.target.branch, path)
        key = stat.checksum if stat else None
        if self.seen and self.seen[-1]["checksum"] == key:
            return
        entry: dict[str, Any] = {"at": round(time.time(), 3), "checksum": key}
        if stat is not None:
            data = api.get(repo, self.target.branch, path)
            if data is None:
                return  # gone between the two reads: the next poll sees it
            valid, why = judge_content(self.kfm, self.target, data)
            entry.update(sha256=hashlib.sha256(data).hexdigest(), valid=valid, what=why)
        else:
            entry.update(sha256=None, valid=None, what="absent")
        self.seen.append(entry)


# -- running with a crash --------------------------------------------------------------------
def run_killed_at_seeded_write(
    kfm: ScenarioContext, target: PromotionTarget, observer: PromotionObserver
) -> dict[str, Any]:
    """Run once and SIGKILL the pipeline right after its k-th write to lakeFS took effect.

    k is drawn from the scenario's seed among the writes that the last publishing run made
    before its merge (all of its writes when it made no merge), so the kill falls inside the
    promotion, before it completes.
    """
    reference = observer.last_publication()
    kfm.judge.require(
        "promotion.published",
        reference is not None and bool(reference.writes),
        "the pipeline published locally but wrote nothing to lakeFS",
        expected="a publishing run writes to lakeFS and moves main",
        observed=[r.to_json()["lakefs_requests"] for r in observer.runs],
    )
    assert reference is not None
    writes = reference.writes
    merge_at = next((i for i, c in enumerate(writes, start=1) if c.is_merge), None)
    candidates = list(range(1, merge_at)) if merge_at else list(range(1, len(writes) + 1))
    if not candidates:
        candidates = [1]
    k = kfm.rng.choice(candidates)
    label = f"update killed after its lakeFS write {k} of {len(writes)}"
    killed: dict[str, Any] = {}
    writes_before = sum(1 for c in target.proxy.calls if c.write is not None)

    running = kfm.sandbox.start(kfm.origin.url, label=label, extra_env=kfm.extra_env)

    def on_write(call: ProxyCall) -> None:
        if call.write is not None and call.write - writes_before == k and not killed:
            running.kill(signal.SIGKILL)
            killed.update(
                write=k,
                request=f"{call.method} {call.path}"
                + (f"?path={call.object_path}" if call.object_path else ""),
                status=call.status,
                at=round(call.at, 3),
            )

    target.proxy.on_write = on_write
    try:
        result = running.wait()
    finally:
        target.proxy.on_write = None
    crash = {
        "seed": kfm.seed,
        "chosen_write": k,
        "writes_in_a_publishing_run": [
            f"{c.method} {c.path}" + (f"?path={c.object_path}" if c.object_path else "")
            for c in writes
        ],
        "killed": killed or None,
        "exit_code": result.exit_code,
    }
    kfm.evidence.setdefault("promotion", {})["crash"] = crash
    if not killed:
        kfm.notes.append(
            f"the run made fewer than {k} lakeFS writes, so it was not killed (exit "
            f"{result.exit_code})"
        )
    return crash


# -- judging ---------------------------------------------------------------------------------
def first_parent_chain(target: PromotionTarget, head: str, stop: str) -> list[Commit]:
    """main's own commits from ``head`` back to (not including) ``stop``, newest first."""
    chain: list[Commit] = []
    current = head
    while current and current != stop and len(chain) < 200:
        commit = target.api.commit(target.repository, current)
        chain.append(commit)
        current = commit.parents[0] if commit.parents else ""
    return chain


def judge_promoted(kfm: ScenarioContext, target: PromotionTarget, run: PromotionRun) -> None:
    """After a publishing run: main holds the new version, through exactly one merge."""
    after = run.after
    assert after is not None
    data = target.api.get(target.repository, after.head, target.object_path)
    if data is None:
        kfm.judge.require(
            "promotion.published",
            False,
            f"{run.label} published locally but main's head commit has no {target.object_path}",
            expected=f"{target.object_path} on main",
            observed=sorted(after.objects),
        )
        return
    valid, what = judge_content(kfm, target, data)
    current = kfm.current.number
    kfm.judge.require(
        "promotion.published",
        valid and what.startswith(f"version {current} "),
        f"main's head commit holds {what} at {target.object_path}, not version {current}",
        expected=f"version {current} at {target.object_path} on main",
        observed={"what": what, "sha256": hashlib.sha256(data).hexdigest()},
    )
    chain = first_parent_chain(target, after.head, run.before.head)
    summary = [{"id": c.id, "parents": len(c.parents), "message": c.message} for c in chain]
    kfm.evidence.setdefault("promotion", {})["new_commits_on_main"] = summary
    one_merge = len(chain) == 1 and len(chain[0].parents) >= 2
    if len(chain) == 1 and len(chain[0].parents) < 2:
        why = "the run committed straight to main instead of merging a run branch into it"
    else:
        why = f"the run put {len(chain)} commits on main; one promotion is one merge"
    kfm.judge.require(
        "promotion.one-merge",
        one_merge,
        "the run promoted through one merge of a run branch into main" if one_merge else why,
        expected="exactly one new commit on main: a merge of the run's branch",
        observed=summary,
    )
    judge_main_clean(kfm, after)


def judge_main_clean(kfm: ScenarioContext, state: MainState) -> None:
    kfm.judge.require(
        "promotion.main-clean",
        not state.uncommitted,
        f"main shows {len(state.uncommitted)} uncommitted change(s) that every reader of main "
        "sees: a partial publication",
        expected="no uncommitted change on main",
        observed=state.uncommitted[:10],
    )


def judge_reader(kfm: ScenarioContext, watcher: MainWatcher) -> None:
    """Every state of main's output a reader saw was a complete, valid version (or absent
    before the first publication)."""
    seen = watcher.seen
    first_present = next((i for i, s in enumerate(seen) if s["checksum"] is not None), None)
    bad = [
        s
        for i, s in enumerate(seen)
        if (s["checksum"] is not None and not s["valid"])
        or (s["checksum"] is None and first_present is not None and i > first_present)
    ]
    kfm.evidence.setdefault("promotion", {})["reader"] = {
        "states_seen": seen[:50],
        "errors": watcher.errors[:5],
    }
    if watcher.errors and not seen:
        raise HarnessError(f"the reader of main could not read lakeFS: {watcher.errors[0]}")
    kfm.judge.require(
        "promotion.never-partial",
        not bad,
        f"a reader of main saw {len(bad)} state(s) of {watcher.target.object_path} that are no "
        "complete, valid version" + (f": {bad[0].get('what')}" if bad else ""),
        expected="absent before the first publication, then only complete, valid versions",
        observed=bad[:5],
    )


def judge_history(kfm: ScenarioContext, target: PromotionTarget, since_head: str) -> None:
    """Every commit the scenario's runs put on main holds a complete, valid output."""
    head = target.api.head(target.repository, target.branch)
    chain = first_parent_chain(target, head, since_head)
    checked = []
    for commit in reversed(chain):
        data = target.api.get(target.repository, commit.id, target.object_path)
        if data is None:
            checked.append({"commit": commit.id, "valid": False, "what": "no output"})
            continue
        valid, what = judge_content(kfm, target, data)
        checked.append({"commit": commit.id, "valid": valid, "what": what})
    kfm.evidence.setdefault("promotion", {})["history"] = checked
    bad = [c for c in checked if not c["valid"]]
    kfm.judge.require(
        "promotion.every-commit-valid",
        not bad,
        f"{len(bad)} of the {len(checked)} commits on main hold no complete, valid output: "
        + (str(bad[0]["what"]) if bad else ""),
        expected="every commit on main holds a complete, valid version",
        observed=checked,
    )


def judge_main_unchanged(kfm: ScenarioContext, run: PromotionRun) -> None:
    """After a failed, rejected or killed run: main's head, objects and staging untouched."""
    after = run.after
    assert after is not None
    kfm.judge.require(
        "promotion.main-unchanged",
        after.head == run.before.head and after.objects == run.before.objects,
        f"{run.label} moved main from {run.before.head[:12]} to {after.head[:12]}"
        if after.head != run.before.head
        else f"{run.label} changed the objects on main",
        expected={"head": run.before.head, "objects": run.before.objects},
        observed={"head": after.head, "objects": after.objects},
    )
    judge_main_clean(kfm, after)
    abandoned = sorted(b for b in run.branches_after if b != "main")
    if abandoned:
        kfm.notes.append(f"branches left after {run.label}: {', '.join(abandoned)}")


def judge_crash(
    kfm: ScenarioContext, target: PromotionTarget, run: PromotionRun, crash: dict[str, Any]
) -> None:
    """A crash before the merge leaves main as it was. (Should the kill have come after a merge
    took effect, main must hold the complete new version through that one merge.)"""
    merged = any(c.is_merge and c.status == 200 for c in run.calls)
    if merged and run.after is not None and run.after.head != run.before.head:
        kfm.notes.append("the kill came after the pipeline's merge took effect")
        judge_promoted(kfm, target, run)
        return
    judge_main_unchanged(kfm, run)


def judge_no_new_commit(kfm: ScenarioContext, observer: PromotionObserver, since: str) -> None:
    head = observer.target.api.head(observer.target.repository, observer.target.branch)
    new = first_parent_chain(observer.target, head, since)
    kfm.judge.require(
        "promotion.idempotent",
        not new,
        f"runs against an unchanged upstream put {len(new)} new commit(s) on main",
        expected="no new commit on main",
        observed=[{"id": c.id, "message": c.message} for c in new],
    )
    if observer.runs and observer.runs[-1].after is not None:
        judge_main_clean(kfm, observer.runs[-1].after)


def revert_last_promotion(kfm: ScenarioContext, target: PromotionTarget) -> dict[str, Any]:
    """The harness reverts main's head commit (the last promotion) through the revert API."""
    api, repo = target.api, target.repository
    head = api.head(repo, target.branch)
    commit = api.commit(repo, head)
    parent = commit.parents[0] if commit.parents else ""
    api.revert(repo, target.branch, head, 1 if len(commit.parents) > 1 else 0)
    reverted = {
        "reverted_commit": head,
        "parent": parent,
        "head_after_revert": api.head(repo, target.branch),
    }
    kfm.evidence.setdefault("promotion", {})["revert"] = reverted
    return reverted


def judge_revert_restores(kfm: ScenarioContext, target: PromotionTarget, before: MainState) -> None:
    """After the revert, main holds exactly what it held before the last publishing run."""
    now = main_state(target)
    kfm.evidence.setdefault("promotion", {}).setdefault("revert", {})["main_after"] = now.to_json()
    kfm.judge.require(
        "promotion.revert-restores",
        now.objects == before.objects and now.output_sha256 == before.output_sha256,
        "reverting the last promotion does not restore main's previous content: the promotion "
        "was not one commit",
        expected={"objects": before.objects, "output_sha256": before.output_sha256},
        observed={"objects": now.objects, "output_sha256": now.output_sha256},
    )
