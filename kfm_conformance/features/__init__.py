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


def declared_check_ids() -> dict[str, str]:
    """Every declared scenario check ID (``<guarantee>/<slug>``, examples aside), mapped to
    the scenario's title."""
    from kfm_conformance import guarantees

    by_file = {g.feature: g.id for g in guarantees.CATALOGUE}
    return {
        f"{by_file[s.feature_file]}/{s.check_slug}": s.name
        for s in declared_scenarios()
        if s.check_slug and s.feature_file in by_file
    }


@dataclass(frozen=True)
class Selection:
    """What ``--only`` chose: whole guarantees, and single scenarios by check ID.

    ``guarantees`` lists every guarantee with at least one selected scenario, in catalogue
    order (the report's rows); ``checks`` maps a guarantee chosen only through some of its
    scenarios to their check IDs (an outline's examples all come with its ID)."""

    guarantees: list[str]
    checks: dict[str, list[str]]

    @property
    def check_ids(self) -> list[str]:
        return [c for ids in self.checks.values() for c in ids]

    def keeps(self, guarantee: str, check_id: str) -> bool:
        """Whether a scenario of ``guarantee`` with this check ID is selected."""
        return guarantee in self.guarantees and chosen_by(check_id, self.check_ids)


def chosen_by(check_id: str, selected_checks: list[str]) -> bool:
    """Whether a scenario is run under ``--only`` with these check IDs: every scenario of a
    guarantee they do not name, and of a guarantee they narrow only those they name (an
    outline's examples come with its ID)."""
    guarantee = check_id.split("/", 1)[0]
    narrowing = [c for c in selected_checks if c.split("/", 1)[0] == guarantee]
    return not narrowing or any(check_id == c or check_id.startswith(c + "[") for c in narrowing)


def select(values: list[str] | None) -> Selection:
    """Resolve ``--only`` values: guarantee IDs or declared check IDs; nothing means all.

    Raises :class:`ValueError`, naming the value, for an unknown guarantee or check ID."""
    from kfm_conformance import guarantees

    if not values:
        return Selection(list(guarantees.IDS), {})
    declared = declared_check_ids()
    whole: set[str] = set()
    checks: dict[str, list[str]] = {}
    for value in values:
        if "/" in value:
            if value not in declared:
                raise ValueError(f"unknown check ID {value!r} (see the @id: tags in features/)")
            guarantee = value.split("/", 1)[0]
            if value not in checks.setdefault(guarantee, []):
                checks[guarantee].append(value)
        elif value in guarantees.BY_ID:
            whole.add(value)
        else:
            raise ValueError(f"unknown guarantee {value!r}; known: {', '.join(guarantees.IDS)}")
    for guarantee in whole:
        checks.pop(guarantee, None)
    chosen = whole | set(checks)
    return Selection([g for g in guarantees.IDS if g in chosen], checks)
