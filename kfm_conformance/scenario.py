"""One scenario's world: the profile, the origin, the sandbox, the evidence and the judge.

Step definitions are thin: each one calls a method here. Every method that observes the
pipeline records what it saw as evidence and hands its finding to the :class:`Judge`, which
raises :class:`~kfm_conformance.verdict.GuaranteeViolation` on a broken requirement. Nothing in
here trusts what the pipeline says about itself: only exit codes, files, and the requests the
origin received.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kfm_conformance import checks, outputs
from kfm_conformance.profile import Profile
from kfm_conformance.sandbox import FileState, RunResult, Sandbox, Snapshot
from kfm_conformance.upstream import (
    Exchange,
    Origin,
    Reply,
    UpstreamScript,
    Version,
    closed_port_url,
)
from kfm_conformance.verdict import Finding, Judge, NotApplicable, SkipKind


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
        self.expect_finished(result)
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
        self.expect_exit("published")
        self.expect_output_rows()
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
        self.expect_exit("published")
        if gzip_second:
            self.upstream.serve_gzip_encoded()
        second = self.fresh_sandbox()
        label = "publication in working directory B" + (" (gzip-encoded)" if gzip_second else "")
        self.run(label, sandbox=second)
        self.expect_exit("published")

    def run_with_reader(self) -> None:
        """Run the pipeline while a reader polls the output; keep what the reader saw."""
        seen = self.poll_output_during(lambda: self.run())
        self.reader_observations.append(seen)

    def mark(self, name: str) -> None:
        """Remember the working directory's files, to compare with later."""
        self.marks[name] = self.sandbox.files()

    def delete_output(self) -> None:
        self.sandbox.output_path.unlink()
        self.notes.append(f"deleted {self.profile.output}; the run-state was left in place")

    # -- judging: observations gathered here, judged by the pure checks in checks.py -----------
    def _check(self, findings: Finding | list[Finding]) -> None:
        self.judge.apply(findings, independent=True)

    def expect_finished(self, result: RunResult) -> None:
        """The run ended by itself within the profile's time bound."""
        self._check(checks.run_finished(result, self.profile.timeout_s))

    def expect_exit(self, *outcomes: str) -> None:
        codes = {o: self.profile.exit_codes.of(o) for o in outcomes}
        self._check(checks.exit_code(self.last_run, codes))

    def expect_every_run_succeeded(self) -> None:
        success = self.profile.exit_codes.success_codes()
        self._check(checks.every_run_succeeded(self.all_runs, success))

    def expect_same_code_every_time(self) -> None:
        self._check(checks.same_code_every_time(self.repeated_exit_codes))

    def expect_success_code(self) -> None:
        self.expect_exit("published", "not_modified")

    def expect_failure_code(self) -> None:
        success = self.profile.exit_codes.success_codes()
        self._check(checks.failure_not_success(self.last_run, success))

    def expect_no_stragglers(self) -> None:
        """No run that ended by itself left a process of its own running (the harness killed
        each one it found; the command lines are the evidence)."""
        self._check(checks.no_stragglers(self.all_runs))

    def expect_output_rows(self, version: Version | None = None) -> None:
        version = version or self.current
        path = self.sandbox.output_path
        exists = path.exists()
        self._check(checks.output_exists(exists, self.profile.output, self.sandbox.files()))
        if not exists:
            return
        try:
            comparison = outputs.compare_rows(version.resource.body, path)
        except outputs.UnreadableOutput as exc:
            self._check(checks.output_readable(str(exc)))
            return
        self._check(
            checks.output_rows(
                comparison.same, comparison.describe(), comparison.expected_rows, version.number
            )
        )
        if version.output is None:
            version.output = self.sandbox.output_state()

    def expect_output_untouched(self, *, inode: bool = True) -> None:
        """The output's bytes (and inode) are those of the last publication."""
        before = self.current_published_state()
        self._check(checks.output_untouched(before, self.sandbox.output_state(), inode=inode))

    def expect_files_unchanged_by_last_run(self) -> None:
        self.marks["before the last run"] = self.last_run.files_before
        self.expect_files_unchanged_since("before the last run")

    def expect_outputs_identical_across_dirs(self) -> None:
        states = {box.workdir.name: box.output_state() for box in self.other_sandboxes}
        digests = {name: state.sha256 if state else None for name, state in states.items()}
        self._check(checks.outputs_identical(digests))

    def expect_reader_saw_whole_versions(self) -> None:
        # Only versions whose published rows were checked against the upstream count as
        # complete: a run's own before/after snapshot could itself be torn.
        complete: set[str | None] = {None}
        complete |= {v.output.sha256 for v in self.versions if v.output is not None}
        seen = [d for batch in self.reader_observations for d in batch]
        self.evidence["reader_summary"] = {
            "reads_with_a_new_state": len(seen),
            "complete_versions": sorted(d for d in complete if d),
        }
        self._check(checks.reader_saw_whole_versions(seen, complete))

    def expect_ims_verbatim_if_sent(self) -> None:
        sent = self.request_of_last_run().header("if-modified-since")
        self._check(checks.ims_verbatim_if_sent(sent, self.served_versions()))

    def current_published_state(self) -> FileState | None:
        return self.upstream.published()

    def expect_files_unchanged_since(self, mark: str) -> None:
        """Output and run-state are byte-identical to the marked moment."""
        self._check(
            checks.files_unchanged(
                self.marks[mark], self.sandbox.files(), self.profile.output, self.profile.state
            )
        )

    def expect_no_temporaries(self, since_last_run: bool = False) -> None:
        """Nothing temporary beside the output: no temp-named file, nor, after a run that did
        not publish, any file that run added."""
        files = self.sandbox.files()
        last = self.last_run if self.all_runs else None
        failed = last is not None and last.exit_code not in self.profile.exit_codes.success_codes()
        added = (
            [p for p in files if p not in last.files_before]
            if since_last_run and last is not None and failed
            else []
        )
        self._check(
            checks.no_temporaries(
                files,
                self.profile.output,
                added_by_failed_run=added,
                declared_state=self.profile.state or (),
            )
        )

    def expect_nothing_published(self) -> None:
        exists = self.sandbox.output_path.exists()
        self._check(checks.nothing_published(exists, self.profile.output))
        self.expect_no_temporaries()

    # -- judging the requests -------------------------------------------------------------------
    def served_versions(self) -> list[checks.ServedVersion]:
        return [
            checks.ServedVersion(
                v.number,
                v.resource.last_modified,
                v.resource.etag,
                v.output.sha256 if v.output else None,
            )
            for v in self.versions
        ]

    def request_of_last_run(self) -> Exchange:
        """The first request of the last run; a run that sent none ends the step."""
        run = self.last_run
        seen = checks.requests_of_run(self.upstream.data_requests(), run)
        self.judge.apply(checks.request_sent(run, seen))
        return seen[0]

    def expect_request_header(self, name: str, value: str | None) -> None:
        """The last run's first request carried ``name`` with exactly ``value`` (or none)."""
        sent = self.request_of_last_run().header(name)
        self._check(checks.request_header(name, sent, value))

    def expect_validators_of_published_version(self) -> None:
        """Whatever validators the last run sent belong to the version that is published."""
        exchange = self.request_of_last_run()
        published = self.current_published_state()
        holder = checks.published_version(
            self.served_versions(), published.sha256 if published else None
        )
        self._check(
            checks.validators_of_published_version(
                exchange.header("if-modified-since"), exchange.header("if-none-match"), holder
            )
        )

    def expect_status_answered(self, status: int) -> None:
        self._check(checks.status_answered(self.request_of_last_run(), status))

    # -- declared limits ------------------------------------------------------------------------
    def require_declared(self, limit: str) -> Any:
        value = getattr(self.profile.limits, limit)
        if value is None:
            raise NotApplicable(
                f"not declared: the profile declares no limits.{limit}", SkipKind.NOT_DECLARED
            )
        return value

    # -- concurrency helpers -------------------------------------------------------------------
    def poll_output_during(self, action: Any, interval_s: float = 0.0005) -> list[str | None]:
        """Read the output again and again while ``action()`` runs; return each read's digest."""
        import hashlib

        seen: list[str | None] = []
        stop = threading.Event()

        def reader() -> None:
            path = self.sandbox.output_path
            while not stop.is_set():
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    digest = None
                else:
                    digest = hashlib.sha256(data).hexdigest()
                if not seen or seen[-1] != digest:
                    seen.append(digest)
                time.sleep(interval_s)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            action()
        finally:
            stop.set()
            thread.join()
        return seen

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
