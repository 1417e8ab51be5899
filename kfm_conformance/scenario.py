"""One scenario's world: the profile, the origin, the sandbox, the evidence and the judge.

A holder: what a scenario has scripted (:class:`~kfm_conformance.upstream.UpstreamScript`),
the runs it made (every sandbox of the scenario reports each run here, and the run observers
are told), the marks and notes it keeps, and its evidence. Judging is elsewhere: the steps
call :mod:`kfm_conformance.expectations`, which hands the observations to the pure checks of
:mod:`kfm_conformance.checks`. Nothing here trusts what the pipeline says about itself: only
exit codes, files, and the requests the origin received.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kfm_conformance import expectations, outputs
from kfm_conformance.profile import Profile
from kfm_conformance.sandbox import RunResult, Sandbox, Snapshot
from kfm_conformance.upstream import (
    Origin,
    Reply,
    UpstreamScript,
    Version,
    closed_port_url,
)
from kfm_conformance.verdict import Judge, NotApplicable, SkipKind


class RunObserver(Protocol):
    """Told before and after every :meth:`ScenarioContext.run`; the capture layer marks its
    sinks here, so the scenario never needs to know what is being captured."""

    def before_run(self, context: ScenarioContext, label: str | None) -> None: ...

    def after_run(self, context: ScenarioContext, result: RunResult) -> None: ...


@dataclass
class ScenarioContext:
    """Everything one scenario needs; built fresh for every scenario by the plugin."""

    profile: Profile
    origin: Origin
    sandbox: Sandbox
    judge: Judge
    seed: int
    make_sandbox: Callable[[], Sandbox]
    extra_env: dict[str, str] = field(default_factory=dict)
    other_sandboxes: list[Sandbox] = field(default_factory=list)
    all_runs: list[RunResult] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    marks: dict[str, Snapshot] = field(default_factory=dict)
    #: The exit codes of a scenario repeated in fresh working directories, in order.
    repeated_exit_codes: list[int | None] = field(default_factory=list)
    #: What a reader saw while runs published: one list of output digests per run.
    reader_observations: list[list[str | None]] = field(default_factory=list)
    run_observers: list[RunObserver] = field(default_factory=list)
    rng: random.Random = field(init=False)
    upstream: UpstreamScript = field(init=False)
    skip_kind: SkipKind | None = None
    _runs_lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _in_flight: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.upstream = UpstreamScript(self.origin, self.seed, self.rng)
        self.sandbox.listener = self
        make_raw = self.make_sandbox

        def make_logged_sandbox() -> Sandbox:
            box = make_raw()
            box.listener = self
            return box

        self.make_sandbox = make_logged_sandbox

    # -- the upstream: scripted by self.upstream; what needs the profile is here ------------
    @property
    def versions(self) -> list[Version]:
        return self.upstream.versions

    @property
    def current(self) -> Version:
        return self.upstream.current

    def script_answer(self, phrase: str) -> Reply:
        """Queue the one-off answer a feature file describes in words."""
        if phrase == "a valid payload larger than the cap":
            cap = int(self.require_declared("max_body_bytes"))
            reply = self.upstream.queue_oversized_answer(cap)
            self.evidence["size_cap"] = {"declared_bytes": cap, "payload_bytes": len(reply.body)}
            return reply
        return self.upstream.queue_answer(phrase)

    def script_slow_answer(self, slowness: str) -> Reply:
        """An answer that takes twice the declared fetch bound, as late headers or a trickle."""
        bound = float(self.require_declared("fetch_timeout_s"))
        return self.upstream.queue_slow_answer(slowness, bound)

    # -- running ------------------------------------------------------------------------------
    def closed_port_url(self) -> str:
        """A loopback URL nobody listens on: connecting to it is refused."""
        url, port = closed_port_url()
        self.notes.append(f"port {port} was free and closed when the run started")
        return url

    def fresh_sandbox(self) -> Sandbox:
        """Another fresh, empty working directory within this scenario."""
        sandbox = self.make_sandbox()
        self.other_sandboxes.append(sandbox)
        return sandbox

    def run(
        self, label: str | None = None, *, src: str | None = None, sandbox: Sandbox | None = None
    ) -> RunResult:
        """Run the pipeline once; a run killed at its timeout fails the scenario."""
        result = (sandbox or self.sandbox).run(
            self.origin.url if src is None else src,
            label=label,
            extra_env=self.extra_env,
        )
        expectations.finished(self, result)
        return result

    # -- the single run log: every sandbox of the scenario reports here -------------------------
    def run_started(self, sandbox: Sandbox, label: str) -> object:
        """Called by :meth:`Sandbox.start` for every run, whoever started it. Observers slice
        what the capture services received by time, so a run that overlaps another (two
        runs at once, parallel crash lanes) is logged but not sliced: it returns False."""
        with self._runs_lock:
            alone = self._in_flight == 0
            self._in_flight += 1
        if alone:
            for observer in self.run_observers:
                observer.before_run(self, label)
        return alone

    def run_finished(self, sandbox: Sandbox, result: RunResult, token: object) -> None:
        """Called when any run of the scenario has ended: one list of runs, observers told."""
        with self._runs_lock:
            self.all_runs.append(result)
            self._in_flight -= 1
        if token is True:
            for observer in self.run_observers:
                observer.after_run(self, result)

    @property
    def last_run(self) -> RunResult:
        if not self.all_runs:
            raise RuntimeError("the pipeline has not run yet")
        return self.all_runs[-1]

    def publish_once(self) -> RunResult:
        """Run and require a successful publication (the precondition of many scenarios)."""
        result = self.run("setup: first publication")
        expectations.exit_code(self, "published")
        expectations.output_rows(self)
        return result

    def run_repeatedly_in_fresh_dirs(self, times: int, answer: str) -> None:
        """Run the same scenario ``times`` times, each in a fresh working directory."""
        codes = []
        for attempt in range(1, times + 1):
            if not re.fullmatch(r"\d+ rows", answer):
                self.script_answer(answer)
            result = self.run(f"repetition {attempt}", sandbox=self.fresh_sandbox())
            codes.append(result.exit_code)
        self.repeated_exit_codes = codes

    def publish_in_fresh_dirs(self, *, gzip_second: bool) -> None:
        """Publish the current version in two fresh working directories."""
        first = self.fresh_sandbox()
        self.run("publication in working directory A", sandbox=first)
        expectations.exit_code(self, "published")
        if gzip_second:
            self.upstream.serve_gzip_encoded()
        second = self.fresh_sandbox()
        label = "publication in working directory B" + (" (gzip-encoded)" if gzip_second else "")
        self.run(label, sandbox=second)
        expectations.exit_code(self, "published")

    def run_with_reader(self) -> None:
        """Run the pipeline while a reader polls the output; keep what the reader saw."""
        seen = outputs.poll_during(self.sandbox.output_path, lambda: self.run())
        self.reader_observations.append(seen)

    def mark(self, name: str) -> None:
        """Remember the working directory's files, to compare with later."""
        self.marks[name] = self.sandbox.files()

    def delete_output(self) -> None:
        self.sandbox.output_path.unlink()
        self.notes.append(f"deleted {self.profile.output}; the run-state was left in place")

    # -- declared limits ------------------------------------------------------------------------
    def require_declared(self, limit: str) -> Any:
        value = getattr(self.profile.limits, limit)
        if value is None:
            raise NotApplicable(
                f"not declared: the profile declares no limits.{limit}", SkipKind.NOT_DECLARED
            )
        return value

    def to_evidence(self) -> dict[str, Any]:
        data = dict(self.evidence)
        data["runs"] = [
            r.to_json() for box in (self.sandbox, *self.other_sandboxes) for r in box.runs
        ]
        data["http"] = self.origin.transcript()
        data["versions"] = self.upstream.to_evidence()
        if self.repeated_exit_codes:
            data["repeated_exit_codes"] = list(self.repeated_exit_codes)
        if self.reader_observations:
            data["reader_observations"] = [list(seen) for seen in self.reader_observations]
        if self.notes:
            data["notes"] = list(self.notes)
        data["workdir"] = self.sandbox.workdir.name
        return data
