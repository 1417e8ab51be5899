"""The cucumber JSON: merged across xdist workers, and checked against the scenario results.

Two pytest hooks (loaded by the CLI with ``-p kfm_conformance.report.cucumber``): pytest-bdd
writes its cucumber JSON only from the xdist controller, which cannot see the scenario
reports, so under ``-n`` every scenario is silently dropped. The hooks make each worker write
its own part and the controller merge the parts into the one file. :func:`cucumber_problems`
then finds a scenario that ran steps but is missing from the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest


def cucumber_scenarios(path: Path) -> list[str] | None:
    """The scenario (element) ids in a cucumber JSON file; None when it is missing or broken."""
    try:
        features = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(features, list):
        return None
    return [
        str(element.get("id"))
        for feature in features
        if isinstance(feature, dict)
        for element in feature.get("elements") or []
        if isinstance(element, dict)
    ]


def cucumber_problems(path: Path, results: list[dict[str, Any]]) -> list[str]:
    """Compare the cucumber JSON with the scenario results: a scenario that ran steps but is
    missing from it was silently dropped (a known pytest-bdd trap)."""
    ids = cucumber_scenarios(path)
    if ids is None:
        return [f"harness error: the cucumber JSON ({path.name}) is missing or unreadable"]
    present = set(ids)
    ran = [r for r in results if r.get("steps")]
    dropped = [
        str(r.get("check_id"))
        for r in ran
        if str(r.get("nodeid", "")).rsplit("::", 1)[-1] not in present
    ]
    problems = []
    if dropped or len(ids) != len(ran):
        problems.append(
            f"harness error: the cucumber JSON holds {len(ids)} scenarios, report.json "
            f"{len(ran)} that ran steps"
            + (f"; missing: {', '.join(dropped[:10])}" if dropped else "")
        )
    return problems


def _cucumber_path(config: pytest.Config) -> str | None:
    path = getattr(config.option, "cucumber_json_path", None)
    return str(path) if path else None


def pytest_configure(config: pytest.Config) -> None:
    """On an xdist worker, write this worker's part of the cucumber JSON."""
    path = _cucumber_path(config)
    workerinput = getattr(config, "workerinput", None)
    if not path or workerinput is None:
        return
    from pytest_bdd.cucumber_json import LogBDDCucumberJSON

    part = LogBDDCucumberJSON(f"{path}.{workerinput['workerid']}.part")
    config.pluginmanager.register(part, "kfm-cucumber-part")


def pytest_unconfigure(config: pytest.Config) -> None:
    """On the controller, merge the workers' parts into the cucumber JSON file."""
    path = _cucumber_path(config)
    if not path or hasattr(config, "workerinput"):
        return
    target = Path(os.path.normpath(os.path.abspath(os.path.expanduser(path))))
    parts = sorted(target.parent.glob(target.name + ".*.part"))
    if not parts:
        return
    merged: dict[str, dict[str, Any]] = {}
    sources = [target, *parts] if target.is_file() else parts
    for source in sources:
        try:
            features = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for feature in features if isinstance(features, list) else []:
            uri = str(feature.get("uri"))
            if uri in merged:
                merged[uri]["elements"].extend(feature.get("elements") or [])
            else:
                merged[uri] = feature
    for feature in merged.values():
        feature["elements"].sort(key=lambda e: (e.get("line", 0), str(e.get("id"))))
    target.write_text(
        json.dumps(sorted(merged.values(), key=lambda f: str(f.get("uri"))), indent=4)
    )
    for part in parts:
        part.unlink()
