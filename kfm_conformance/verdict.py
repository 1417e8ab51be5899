"""Verdicts, findings and the judge that turns evidence into them.

Five verdicts, kept apart (as Bowtie keeps "failed" apart from "errored"):

- ``pass``: every check held.
- ``warn``: a recommended check (a SHOULD) did not hold. Under ``--strict`` it is a ``fail``.
- ``fail``: the pipeline broke a guarantee. Only a :class:`GuaranteeViolation` produces it.
- ``skip``: the check does not apply, and the reason says why (``not declared``, or a tool
  that is unavailable).
- ``error``: the harness or its infrastructure broke. Never blamed on the pipeline.

Library code that judges evidence returns :class:`Finding` objects; step code hands them to a
:class:`Judge`, which raises on a broken requirement and records the rest as evidence.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from kfm_conformance.levels import finding_is_recommended


class Verdict(enum.StrEnum):
    """The verdict of one scenario, one guarantee, or one check."""

    PASS = "pass"
    WARN = "warn"
    SKIP = "skip"
    FAIL = "fail"
    ERROR = "error"

    @property
    def severity(self) -> int:
        """Order used to fold many verdicts into one: the worst wins."""
        return _SEVERITY[self]

    @staticmethod
    def worst(verdicts: Iterable[Verdict]) -> Verdict:
        """The most severe verdict; ``skip`` only when nothing else ran."""
        found = list(verdicts)
        if not found:
            return Verdict.SKIP
        ran = [v for v in found if v is not Verdict.SKIP]
        if not ran:
            return Verdict.SKIP
        return max(ran, key=lambda v: v.severity)


_SEVERITY = {
    Verdict.SKIP: 0,
    Verdict.PASS: 1,
    Verdict.WARN: 2,
    Verdict.FAIL: 3,
    Verdict.ERROR: 4,
}


class Level(enum.StrEnum):
    """How binding a check is: a blueprint MUST, or a SHOULD."""

    REQUIRED = "required"
    RECOMMENDED = "recommended"


class SkipKind(enum.StrEnum):
    """Why a scenario was skipped. Only ``not-declared`` may leave a run certifiable."""

    NOT_DECLARED = "not-declared"
    UNAVAILABLE = "unavailable"


class GuaranteeViolation(AssertionError):
    """The pipeline broke a guarantee. The only road to a ``fail`` verdict."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


class PreconditionFailed(GuaranteeViolation):
    """A ``Given`` step did not hold (say, the first publication failed): the pipeline broke
    something, but not yet the guarantee's own checks, which could then not be judged."""


class HarnessError(Exception):
    """The harness or its infrastructure broke: the verdict is ``error``, never ``fail``."""


class ConfigurationError(Exception):
    """Bad input to the harness (profile, options, command). The CLI exits 2 with one line."""


class NotApplicable(Exception):
    """The scenario does not apply. Carries the :class:`SkipKind` and a reason."""

    def __init__(self, reason: str, kind: SkipKind = SkipKind.NOT_DECLARED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class Finding:
    """One judged fact about the pipeline, with what was expected and what was observed.

    Its level is not chosen where it is made: a check named in
    :data:`kfm_conformance.levels.RECOMMENDED_FINDINGS` is a SHOULD, every other a MUST."""

    check: str
    ok: bool
    message: str
    expected: Any = None
    observed: Any = None
    level: Level = field(init=False)

    def __post_init__(self) -> None:
        level = Level.RECOMMENDED if finding_is_recommended(self.check) else Level.REQUIRED
        object.__setattr__(self, "level", level)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["level"] = str(self.level)
        return data


def fact(check: str, ok: bool, message: str, **detail: Any) -> Finding:
    """A finding: whether ``check`` held, in words, with what was expected and observed."""
    return Finding(check=check, ok=ok, message=message, **detail)


@dataclass
class Judge:
    """Collects the findings of one scenario.

    A broken requirement ends the step it is found in (:meth:`require`), except an
    *independent* one (:meth:`check`): later checks do not depend on it, so it is kept and the
    scenario goes on, to report every defect at once; the plugin fails the scenario at its
    end. In a ``Given`` step (``phase == "given"``) any broken requirement is a
    :class:`PreconditionFailed` at once.
    """

    strict: bool = False
    findings: list[Finding] = field(default_factory=list)
    phase: str | None = None
    deferred: list[Finding] = field(default_factory=list)

    def _binds(self, finding: Finding) -> bool:
        return not finding.ok and (finding.level is Level.REQUIRED or self.strict)

    def apply(self, findings: Finding | Iterable[Finding], *, independent: bool = False) -> None:
        """Record findings; raise for the first one that binds (unless ``independent``)."""
        batch = [findings] if isinstance(findings, Finding) else list(findings)
        self.findings.extend(batch)
        for finding in batch:
            if not self._binds(finding):
                continue
            if self.phase == "given":
                raise PreconditionFailed(finding)
            if independent:
                self.deferred.append(finding)
                continue
            raise GuaranteeViolation(finding)

    def require(self, check: str, ok: bool, message: str, **detail: Any) -> None:
        """A fact later checks depend on: broken, it ends the step (a SHOULD: under
        ``--strict`` only)."""
        self.apply(fact(check, ok, message, **detail))

    def check(self, check: str, ok: bool, message: str, **detail: Any) -> None:
        """A fact later checks do not depend on: kept, and the scenario goes on."""
        self.apply(fact(check, ok, message, **detail), independent=True)

    def raise_deferred(self) -> None:
        """At the end of a scenario: fail it if an independent check did not hold."""
        if self.deferred:
            raise GuaranteeViolation(self.deferred[0])

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok and f.level is Level.RECOMMENDED]

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok and f.level is Level.REQUIRED]

    @property
    def binding_failures(self) -> list[Finding]:
        """Every broken finding that makes the scenario fail, in the order found."""
        return [f for f in self.findings if self._binds(f)]
