"""One scenario's world: the profile, the origin, the sandbox, the evidence and the judge.

Step definitions are thin: each one calls a method here. Every method that observes the
pipeline records what it saw as evidence and hands its finding to the :class:`Judge`, which
raises :class:`~kfm_conformance.verdict.GuaranteeViolation` on a broken requirement. Nothing in
here trusts what the pipeline says about itself: only exit codes, files, and the requests the
origin received.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kfm_conformance import outputs
from kfm_conformance.profile import Profile
from kfm_conformance.sandbox import FileState, RunResult, Sandbox, Snapshot
from kfm_conformance.upstream import (
    Exchange,
    Origin,
    Reply,
    Resource,
    http_date,
    named_body,
    rows_payload,
    script_next_answer,
)
from kfm_conformance.verdict import Judge, NotApplicable, SkipKind

#: File names that betray a temporary file left behind.
TEMP_MARKERS = (".tmp", ".temp", ".part", ".partial", ".wal", "~", ".swp")


@dataclass
class Version:
    """A version of the upstream data the scenario served, and what publishing it produced."""

    number: int
    resource: Resource
    output: FileState | None = None


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
    versions: list[Version] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    marks: dict[str, Snapshot] = field(default_factory=dict)
    run_observers: list[RunObserver] = field(default_factory=list)
    rng: random.Random = field(init=False)
    skip_kind: SkipKind | None = None
    _runs_lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _in_flight: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.sandbox.listener = self
        make_raw = self.make_sandbox

        def make_logged_sandbox() -> Sandbox:
            box = make_raw()
            box.listener = self
            return box

        self.make_sandbox = make_logged_sandbox

    # -- the upstream -------------------------------------------------------------------------
    def serve(
        self,
        body: str | bytes,
        *,
        last_modified: str | None = "default",
        etag: str | None = None,
        honour_conditionals: bool = True,
        gzip: bool = False,
    ) -> Version:
        """Make a new version of the upstream data current."""
        number = len(self.versions) + 1
        payload = body if isinstance(body, bytes) else named_body(body, seed=self.seed)
        if last_modified == "default":
            last_modified = http_date(1_700_000_000 + 86_400 * number)
        resource = Resource(
            body=payload,
            last_modified=last_modified,
            etag=etag,
            honour_conditionals=honour_conditionals,
            gzip=gzip,
        )
        self.origin.serve(resource)
        version = Version(number, resource)
        self.versions.append(version)
        return version

    def serve_rows(self, count: int, **kw: Any) -> Version:
        version_number = len(self.versions) + 1
        return self.serve(f"{count} rows of version {version_number}", **kw)

    @property
    def current(self) -> Version:
        if not self.versions:
            raise RuntimeError("no upstream version served yet")
        return self.versions[-1]

    def serve_scrambled_rows(self, count: int) -> Version:
        rows = json.loads(rows_payload(count, seed=self.seed, version=len(self.versions) + 1))
        self.rng.shuffle(rows)
        return self.serve(json.dumps(rows, separators=(",", ":")).encode())

    def serve_published_version_again(self) -> None:
        """Serve the resource of the version whose data is published, validators and all."""
        published = self.current_published_state()
        for version in reversed(self.versions):
            if (
                version.output is not None
                and published is not None
                and version.output.sha256 == published.sha256
            ):
                self.origin.serve(version.resource)
                self.versions.append(version)
                return
        raise RuntimeError("no published version to go back to")

    def script_answer(self, phrase: str) -> Reply:
        """Queue the one-off answer a feature file describes in words."""
        if phrase == "a valid payload larger than the cap":
            cap = int(self.require_declared("max_body_bytes"))
            count = cap // 40 + 100  # every generated row is longer than 40 bytes
            body = rows_payload(count, seed=self.seed, version=97)
            self.evidence["size_cap"] = {"declared_bytes": cap, "payload_bytes": len(body)}
            reply = Reply(body=body, headers={"Content-Type": "application/json"})
            self.origin.push(reply)
            return reply
        return script_next_answer(self.origin, phrase, seed=self.seed)

    def script_slow_answer(self, slowness: str) -> Reply:
        """An answer that takes twice the declared fetch bound, as late headers or a trickle."""
        bound = float(self.require_declared("fetch_timeout_s"))
        body = rows_payload(25, seed=self.seed, version=98)
        if slowness == "headers sent late":
            reply = Reply(body=body, delay_s=2 * bound)
        elif slowness == "a trickling body":
            chunk = max(1, len(body) // 40)
            reply = Reply(body=body, trickle_chunk=chunk, trickle_interval_s=2 * bound / 40)
        else:
            raise ValueError(f"unknown slowness {slowness!r}")
        self.origin.push(reply)
        return reply

    # -- running ------------------------------------------------------------------------------
    def closed_port_url(self) -> str:
        """A loopback URL nobody listens on: connecting to it is refused."""
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.notes.append(f"port {port} was free and closed when the run started")
        return f"http://127.0.0.1:{port}/data.json"

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

    def expect_finished(self, result: RunResult) -> None:
        """The run ended by itself within the profile's time bound."""
        self.judge.check(
            "run.finished",
            not result.timed_out,
            f"the pipeline did not finish within its timeout of {self.profile.timeout_s:g} s "
            "and was killed",
            expected=f"exit within {self.profile.timeout_s:g} s",
            observed=result.observed_end(),
        )

    def expect_no_stragglers(self) -> None:
        """No run that ended by itself left a process of its own running (the harness killed
        each one it found; the command lines are the evidence)."""
        leftovers = {
            r.label: r.stragglers
            for r in self.all_runs
            if r.stragglers and not r.killed and not r.timed_out
        }
        self.judge.check(
            "run.no-stragglers",
            not leftovers,
            "a process of the run was still running after the run had exited (its exit code "
            "claimed the work was done); the harness killed it",
            expected="every process of a run ends before the run's exit",
            observed=leftovers,
        )

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
        self.evidence["repeated_exit_codes"] = codes

    def publish_in_fresh_dirs(self, *, gzip_second: bool) -> None:
        """Publish the current version in two fresh working directories."""
        first = self.fresh_sandbox()
        self.run("publication in working directory A", sandbox=first)
        self.expect_exit("published")
        if gzip_second:
            resource = self.current.resource
            self.origin.serve(
                Resource(
                    body=resource.body,
                    last_modified=resource.last_modified,
                    etag=resource.etag,
                    gzip=True,
                )
            )
        second = self.fresh_sandbox()
        label = "publication in working directory B" + (" (gzip-encoded)" if gzip_second else "")
        self.run(label, sandbox=second)
        self.expect_exit("published")

    def run_with_reader(self) -> None:
        """Run the pipeline while a reader polls the output; keep what the reader saw."""
        seen = self.poll_output_during(lambda: self.run())
        self.evidence.setdefault("reader_observations", []).append(seen)

    def mark(self, name: str) -> None:
        """Remember the working directory's files, to compare with later."""
        self.marks[name] = self.sandbox.files()

    def delete_output(self) -> None:
        self.sandbox.output_path.unlink()
        self.notes.append(f"deleted {self.profile.output}; the run-state was left in place")

    # -- judging exit codes --------------------------------------------------------------------
    def expect_exit(self, *outcomes: str) -> None:
        result = self.last_run
        codes = {o: self.profile.exit_codes.of(o) for o in outcomes}
        self.judge.check(
            "exit-code",
            result.exit_code in codes.values(),
            f"{result.label} exited {result.exit_code}; declared for "
            + " or ".join(f"{o}: {c}" for o, c in codes.items()),
            expected=codes,
            observed=result.exit_code,
        )

    def expect_every_run_succeeded(self) -> None:
        success = self.profile.exit_codes.success_codes()
        bad = [(r.label, r.exit_code) for r in self.all_runs if r.exit_code not in success]
        self.judge.check(
            "exit-code.success",
            not bad,
            "a run against an unchanged upstream did not exit with a success code",
            expected=sorted(success),
            observed=bad,
        )

    def expect_same_code_every_time(self) -> None:
        codes = self.evidence.get("repeated_exit_codes", [])
        self.judge.check(
            "exit-code.deterministic",
            len(set(codes)) == 1,
            f"the same scenario gave different exit codes: {codes}",
            expected="one code, every time",
            observed=codes,
        )

    def expect_success_code(self) -> None:
        self.expect_exit("published", "not_modified")

    def expect_failure_code(self) -> None:
        result = self.last_run
        success = self.profile.exit_codes.success_codes()
        self.judge.check(
            "exit-code.failure-not-success",
            result.exit_code not in success,
            f"{result.label} exited {result.exit_code}, a success code, on a failure",
            expected=f"any code but {sorted(success)}",
            observed=result.exit_code,
        )

    # -- judging the output ------------------------------------------------------------------
    def expect_output_rows(self, version: Version | None = None) -> None:
        version = version or self.current
        path = self.sandbox.output_path
        self.judge.check(
            "output.exists",
            path.exists(),
            f"no output at {self.profile.output} after a publishing run",
            expected=self.profile.output,
            observed=sorted(self.sandbox.files()),
        )
        if not path.exists():
            return
        try:
            comparison = outputs.compare_rows(version.resource.body, path)
        except outputs.UnreadableOutput as exc:
            self.judge.check(
                "output.readable",
                False,
                f"the output is unreadable: {exc}",
                expected="rows in the output's format",
                observed=str(exc),
            )
            return
        self.judge.check(
            "output.rows",
            comparison.same,
            f"the output does not hold version {version.number}'s rows: " + comparison.describe(),
            expected=f"{comparison.expected_rows} rows of version {version.number}, in order",
            observed=comparison.describe(),
        )
        if version.output is None:
            version.output = self.sandbox.output_state()

    def expect_output_untouched(self, *, inode: bool = True) -> None:
        """The output's bytes (and inode) are those of the last publication."""
        before = self.current_published_state()
        after = self.sandbox.output_state()
        same = after is not None and before is not None and after.sha256 == before.sha256
        self.judge.check(
            "output.bytes-unchanged",
            same,
            "the output's bytes changed",
            expected=before.sha256 if before else None,
            observed=after.sha256 if after else "absent",
        )
        if inode and before is not None and after is not None:
            self.judge.check(
                "output.inode-unchanged",
                after.inode == before.inode,
                "the output was rewritten (new inode) although nothing changed",
                expected=before.inode,
                observed=after.inode,
            )

    def expect_files_unchanged_by_last_run(self) -> None:
        self.marks["before the last run"] = self.last_run.files_before
        self.expect_files_unchanged_since("before the last run")

    def expect_outputs_identical_across_dirs(self) -> None:
        states = {box.workdir.name: box.output_state() for box in self.other_sandboxes}
        digests = {name: state.sha256 if state else None for name, state in states.items()}
        self.judge.check(
            "output.identical-across-dirs",
            len(set(digests.values())) == 1 and None not in digests.values(),
            "the same payload gave different output bytes in different working directories",
            expected="one sha256 for every working directory",
            observed=digests,
        )

    def expect_reader_saw_whole_versions(self) -> None:
        # Only versions whose published rows were checked against the upstream count as
        # complete: a run's own before/after snapshot could itself be torn.
        complete: set[str | None] = {None}
        complete |= {v.output.sha256 for v in self.versions if v.output is not None}
        seen = [d for batch in self.evidence.get("reader_observations", []) for d in batch]
        torn = [d for d in seen if d not in complete]
        self.evidence["reader_summary"] = {
            "reads_with_a_new_state": len(seen),
            "complete_versions": sorted(d for d in complete if d),
        }
        self.judge.check(
            "output.never-torn",
            not torn,
            f"a reader saw {len(torn)} state(s) of the output that are no complete version",
            expected="absent, or a complete published version",
            observed=torn[:5],
        )

    def expect_ims_verbatim_if_sent(self) -> None:
        exchange = self.request_of_last_run()
        sent = exchange.header("if-modified-since")
        stored = {v.resource.last_modified for v in self.versions}
        self.judge.check(
            "request.if-modified-since",
            sent is None or sent in stored,
            "the pipeline sent an If-Modified-Since that the upstream never gave it",
            expected=[*sorted(v for v in stored if v), "or no header"],
            observed=sent,
        )

    def current_published_state(self) -> FileState | None:
        for version in reversed(self.versions):
            if version.output is not None:
                return version.output
        return None

    def expect_files_unchanged_since(self, mark: str) -> None:
        """Output and run-state are byte-identical to the marked moment."""
        before = self.marks[mark]
        after = self.sandbox.files()
        output = self.profile.output
        digest_before = before[output].sha256 if output in before else "absent"
        digest_after = after[output].sha256 if output in after else "absent"
        self.judge.check(
            "output.unchanged",
            digest_before == digest_after,
            "the published output changed on a run that must not publish",
            expected=digest_before,
            observed=digest_after,
        )
        changed = sorted(
            path
            for path in set(before) | set(after)
            if path != output
            and (
                before.get(path) is None
                or after.get(path) is None
                or before[path].sha256 != after[path].sha256
            )
        )
        declared = self.profile.state
        if declared is not None:
            in_state = [p for p in changed if _under_any(p, declared)]
            self.judge.check(
                "state.unchanged",
                not in_state,
                "the declared run-state changed on a run that must not publish",
                expected="byte-identical: " + ", ".join(declared),
                observed=in_state,
            )
        else:
            self.judge.recommend(
                "state.unchanged",
                not changed,
                "files in the working directory changed on a run that must not publish "
                "(the profile declares no state paths, so this is a warning)",
                expected="no file changed",
                observed=changed,
            )

    def expect_no_temporaries(self, since_last_run: bool = False) -> None:
        """Nothing temporary beside the output: no temp-named file, nor, after a run that did
        not publish, any file that run added."""
        out_dir = self.sandbox.output_path.parent
        rel_dir = out_dir.relative_to(self.sandbox.workdir).as_posix()
        files = self.sandbox.files()
        beside = [p for p in files if _parent(p) == ("" if rel_dir == "." else rel_dir)]
        leftovers = [
            p
            for p in beside
            if p != self.profile.output and _looks_temporary(Path(p).name, self.profile.output)
        ]
        last = self.last_run if self.all_runs else None
        failed = last is not None and last.exit_code not in self.profile.exit_codes.success_codes()
        if since_last_run and last is not None and failed:
            declared = self.profile.state or ()
            leftovers += [
                p
                for p in beside
                if p not in last.files_before
                and p != self.profile.output
                and not _under_any(p, declared)
            ]
        self.judge.check(
            "output.no-temporaries",
            not leftovers,
            "temporary files were left beside the output",
            expected=f"only {self.profile.output} in {rel_dir}/",
            observed=sorted(set(leftovers)),
        )

    def expect_nothing_published(self) -> None:
        self.judge.check(
            "output.absent",
            not self.sandbox.output_path.exists(),
            "an output was published from data that had to be rejected",
            expected="no output",
            observed=self.profile.output,
        )
        self.expect_no_temporaries()

    # -- judging the requests -------------------------------------------------------------------
    def data_requests(self) -> list[Exchange]:
        return self.origin.requests_for()

    def request_of_last_run(self) -> Exchange:
        run = self.last_run
        seen = [e for e in self.data_requests() if run.started_at <= e.at <= run.ended_at]
        self.judge.require(
            "request.sent",
            bool(seen),
            f"{run.label} sent no request to the upstream",
            expected="a GET of the upstream URL",
            observed="no request",
        )
        return seen[0]

    def expect_request_header(self, name: str, value: str | None) -> None:
        """The last run's first request carried ``name`` with exactly ``value`` (or none)."""
        exchange = self.request_of_last_run()
        sent = exchange.header(name)
        if value is None:
            self.judge.check(
                f"request.no-{name.lower()}",
                sent is None,
                f"the request carried {name}: {sent!r} although there was nothing to send",
                expected="header absent",
                observed=sent,
            )
        else:
            self.judge.check(
                f"request.{name.lower()}",
                sent == value,
                f"the request carried {name} {sent!r}, not the stored validator byte for byte",
                expected=value,
                observed=sent,
            )

    def expect_validators_of_published_version(self) -> None:
        """Whatever validators the last run sent belong to the version that is published."""
        exchange = self.request_of_last_run()
        ims, inm = exchange.header("if-modified-since"), exchange.header("if-none-match")
        published = self.current_published_state()
        holder = next(
            (
                v
                for v in reversed(self.versions)
                if v.output is not None
                and published is not None
                and v.output.sha256 == published.sha256
            ),
            None,
        )
        allowed_ims = {holder.resource.last_modified} if holder else set()
        allowed_inm = {holder.resource.etag} if holder else set()
        ok = (ims is None or ims in allowed_ims) and (inm is None or inm in allowed_inm)
        self.judge.check(
            "state.matches-output",
            ok,
            "the pipeline sent validators of a version it has not published: its run-state "
            "disagrees with its output",
            expected={
                "published version": holder.number if holder else None,
                "If-Modified-Since": sorted(v for v in allowed_ims if v) or None,
                "If-None-Match": sorted(v for v in allowed_inm if v) or None,
            },
            observed={"If-Modified-Since": ims, "If-None-Match": inm},
        )

    def expect_status_answered(self, status: int) -> None:
        exchange = self.request_of_last_run()
        self.judge.check(
            "upstream.status",
            exchange.status == status,
            f"the upstream answered {exchange.status}, expected {status} "
            f"(the request carried If-Modified-Since={exchange.header('if-modified-since')!r}, "
            f"If-None-Match={exchange.header('if-none-match')!r})",
            expected=status,
            observed=exchange.status,
        )

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
        data["versions"] = [
            {
                "number": v.number,
                "last_modified": v.resource.last_modified,
                "etag": v.resource.etag,
                "payload_bytes": len(v.resource.body),
                "output_sha256": v.output.sha256 if v.output else None,
            }
            for v in self.versions
        ]
        if self.notes:
            data["notes"] = list(self.notes)
        data["workdir"] = self.sandbox.workdir.name
        return data


def _parent(relpath: str) -> str:
    return relpath.rpartition("/")[0]


def _under_any(relpath: str, prefixes: tuple[str, ...]) -> bool:
    for prefix in prefixes:
        clean = prefix.rstrip("/")
        if relpath == clean or relpath.startswith(clean + "/"):
            return True
    return False


def _looks_temporary(name: str, output: str) -> bool:
    lowered = name.lower()
    base = Path(output).name.lower()
    if any(lowered.endswith(m) or m + "." in lowered for m in TEMP_MARKERS):
        return True
    return lowered != base and base in lowered and lowered.startswith((".", "tmp"))
