"""Secrets never reach a report: every value a profile marks secret, and every known
credential variable's value, is replaced by ``***`` before anything is written."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfm_conformance.profile import Profile

MASK = "***"

#: Process-wide secrets registered at run time (service credentials the harness generated).
_RUNTIME_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make sure ``value`` is masked wherever a report or bundle file shows it."""
    if value and len(value) >= 4:
        _RUNTIME_SECRETS.add(value)


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole; also the form a
        # secret takes inside a JSON string.
        forms = {s for s in secrets if s} | {json.dumps(s)[1:-1] for s in secrets if s}
        self.secrets = sorted(forms, key=len, reverse=True)

    @classmethod
    def for_profile(cls, profile: Profile, extra: Iterable[str] = ()) -> Redactor:
        values = profile.secret_values(dict(os.environ))
        return cls([*values, *extra, *_RUNTIME_SECRETS])

    def redact_text(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {self.redact_text(str(k)): self.redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value
