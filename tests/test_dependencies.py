"""Every third-party module the harness or the bundled reference imports comes with a plain
``pip install`` of the package, or is named here as optional with the extra that brings it.

``tests/test_wheel_install.py`` installs the wheel into a virtual environment that sees the
machine's site-packages, so it cannot notice a dependency that only an extra (or the
developer's machine) provides. That happened: the OpenTelemetry SDK was in the ``reference``
extra only, and after a plain ``pip install`` the main job refused the reference on telemetry.
This test reads every ``import`` (at any depth, so lazy imports count) and checks it against the
installed package's core requirements and what they require in turn.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "kfm-conformance"
#: The bundled reference: the main job certifies it, so its imports are the package's too.
REFERENCE_MODULES = ("pipeline", "provenance_sidecars", "lakefs_promotion")

#: Imports a plain install does not bring, with what brings them.
OPTIONAL: dict[str, str] = {
    "lakefs": "extra reference (reference/profile-lakefs.toml)",
    "testcontainers": "extra containers (services in containers)",
    "airflow": "the Airflow installation of the DAG under test (dag_runner runs there)",
    "sqlalchemy": "the Airflow installation of the DAG under test (dag_runner runs there)",
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _core_requirements(distribution: str) -> set[str]:
    names = set()
    for requirement in metadata.requires(distribution) or []:
        if "extra ==" in requirement:
            continue
        names.add(_normal(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]))
    return names


def _installed_closure(distribution: str) -> set[str]:
    """The distribution's core requirements and theirs, as far as they are installed."""
    found: set[str] = set()
    pending = list(_core_requirements(distribution))
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        try:
            pending += _core_requirements(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _third_party_imports() -> dict[str, set[str]]:
    """Every imported third-party module by its dotted name, with the files that import it."""
    files = [*REPO.glob("kfm_conformance/**/*.py")]
    files += [REPO / "reference" / f"{name}.py" for name in REFERENCE_MODULES]
    local = {"kfm_conformance", "__future__", *REFERENCE_MODULES}
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # ``from a import b``: b may be a module of its own (``from opentelemetry
                # import trace``); names that are not modules are skipped when resolved.
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in local and top not in sys.stdlib_module_names:
                    found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def _owners() -> dict[Path, str]:
    """Each installed file of a third-party distribution, with that distribution's name."""
    owners: dict[Path, str] = {}
    for distribution in metadata.distributions():
        name = _normal(distribution.metadata["Name"] or "")
        for file in distribution.files or []:
            owners[Path(str(distribution.locate_file(file))).resolve()] = name
    return owners


def _providing_distribution(module: str, owners: dict[Path, str]) -> str | None:
    """The distribution whose file holds ``module``; ``""`` when there is nothing to check:
    the name is not a module (``from a import SomeClass``), or it is a namespace package such
    as ``opentelemetry``, spread over several distributions (its modules decide)."""
    try:
        spec = importlib.util.find_spec(module)
    except ImportError:
        return ""
    if spec is None or spec.origin is None or spec.origin in ("built-in", "frozen"):
        return ""
    return owners.get(Path(spec.origin).resolve())


def test_every_import_comes_with_a_plain_install_or_is_declared_optional() -> None:
    closure = _installed_closure(PACKAGE)
    owners = _owners()
    missing = []
    for module, where in sorted(_third_party_imports().items()):
        if module.split(".")[0] in OPTIONAL:
            continue
        distribution = _providing_distribution(module, owners)
        if distribution != "" and distribution not in closure:
            missing.append(f"{module} (from {distribution}, imported by {sorted(where)[0]})")
    assert not missing, "not brought by `pip install kfm-conformance`: " + "; ".join(missing)


def test_the_optional_imports_are_still_imported_and_their_extras_exist() -> None:
    """The list above stays honest: each entry is still imported, and an extra it names is
    one the package declares and that brings the module."""
    imported = {name.split(".")[0] for name in _third_party_imports()}
    extras = set(metadata.metadata(PACKAGE).get_all("Provides-Extra") or [])
    requirements = metadata.requires(PACKAGE) or []
    for module, why in OPTIONAL.items():
        assert module in imported, f"{module} is no longer imported: drop it from OPTIONAL"
        named = re.match(r"extra (\w+)", why)
        if named is None:
            continue
        extra = named.group(1)
        assert extra in extras, f"{module}: the package has no extra {extra!r}"
        brought = [r for r in requirements if f'extra == "{extra}"' in r]
        assert any(_normal(r).startswith(_normal(module)) for r in brought), (module, brought)
