"""The real services' builds, for the tests that need them: present, or fail (CI) / skip.

A required service test whose service build is missing FAILS when ``CI`` is set (CI builds
every service with ``scripts/setup.sh --services``) and skips with the reason elsewhere.
"""

from __future__ import annotations

import os

import pytest


def require_service(service: str) -> None:
    """Fail (under CI) or skip (elsewhere) when ``service`` cannot be started here."""
    from kfm_conformance.services.local import missing_builds

    reason = missing_builds(wanted={service}).get(service)
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so a missing service build is a failure)")
    pytest.skip(reason)
