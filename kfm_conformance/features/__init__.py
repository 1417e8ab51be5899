"""The guarantees as Gherkin feature files, one per guarantee, shipped with the package."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

FEATURES_DIR = Path(__file__).resolve().parent


def feature_files() -> list[Path]:
    return sorted(FEATURES_DIR.glob("*.feature"))


def inventory_digest() -> str:
    """sha256 over every feature file's name and bytes: which checks this harness runs."""
    digest = hashlib.sha256()
    for path in feature_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


#: The tag that declares a scenario's stable check ID: ``@id:<slug>``. The check ID is
#: ``<guarantee>/<slug>`` (plus the example row for outlines); rewording a title keeps it.
ID_TAG_PREFIX = "id:"
_ID_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_SCENARIO = re.compile(r"^\s*(?:Scenario Outline|Scenario|Example):\s*(?P<name>.+?)\s*$")
_TAGS = re.compile(r"^\s*(@\S+(?:\s+@\S+)*)\s*$")


@dataclass(frozen=True)
class DeclaredScenario:
    """One scenario of a feature file and the check ID it declares."""

    feature_file: str
    line: int
    name: str
    check_slug: str | None


def declared_id(tags: set[str] | list[str]) -> str | None:
    """The ``@id:`` slug among a scenario's tags (pytest-bdd gives them without the ``@``)."""
    found = [t[len(ID_TAG_PREFIX) :] for t in tags if t.startswith(ID_TAG_PREFIX)]
    return found[0] if len(found) == 1 else None


def declared_scenarios(paths: list[Path] | None = None) -> list[DeclaredScenario]:
    """Every scenario of the feature files with the ID its ``@id:`` tag declares (or None)."""
    found: list[DeclaredScenario] = []
    for path in paths or feature_files():
        pending: list[str] = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            tags = _TAGS.match(line)
            if tags:
                pending += [t.lstrip("@") for t in tags.group(1).split()]
                continue
            scenario = _SCENARIO.match(line)
            if scenario:
                found.append(
                    DeclaredScenario(path.name, number, scenario["name"], declared_id(pending))
                )
            if line.strip() and not line.strip().startswith("#"):
                pending = []
    return found


def inventory_problems(paths: list[Path] | None = None) -> list[str]:
    """Scenarios without exactly one well-formed ``@id:`` tag, and IDs declared twice within a
    feature (the guarantee prefixes the ID, so IDs need only be unique per feature)."""
    problems: list[str] = []
    seen: dict[tuple[str, str], DeclaredScenario] = {}
    for scenario in declared_scenarios(paths):
        where = f"{scenario.feature_file}:{scenario.line}"
        slug = scenario.check_slug
        if slug is None:
            problems.append(f"{where}: scenario {scenario.name!r} declares no @id: tag")
            continue
        if not _ID_SLUG.fullmatch(slug):
            problems.append(f"{where}: @id:{slug} is not a lower-case slug")
        key = (scenario.feature_file, slug)
        if key in seen:
            first = seen[key]
            problems.append(f"{where}: @id:{slug} is declared already at line {first.line}")
        seen[key] = scenario
    return problems
