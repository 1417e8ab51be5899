"""Judging provenance sidecars: a STAC Item, a PROV-O document and a DCAT description.

The blueprint promises "full provenance: STAC + PROV-O + DCAT". A profile declares where the
pipeline writes each sidecar (``[provenance]``); after a publication the harness reads them
back and checks, from the outside, that each one is well-formed for its standard and
describes the data that was actually published:

- STAC: a STAC Item (``type: Feature``, ``stac_version``, ``id``, ``geometry``,
  ``properties`` with a datetime, ``links``, ``assets``) with an asset whose ``href`` is the
  published output;
- PROV-O (JSON-LD): a ``prov:Entity`` for the output, ``prov:wasGeneratedBy`` an
  ``prov:Activity`` that ``prov:used`` the upstream URL;
- DCAT (JSON-LD): a ``dcat:Dataset`` with a ``dcat:Distribution`` whose download or access URL
  is the published output.

A checksum is recommended (``warn`` when absent). A checksum that is present must be the
published output's sha256 (plain hex, or the ``1220``-prefixed multihash STAC's file
extension uses): a sidecar naming another digest describes another version, and fails.

JSON-LD is read in its compact form: prefixes are expanded from an inline ``@context`` and
from the well-known prefixes below; remote contexts are never fetched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfm_conformance.verdict import Finding, NotApplicable, SkipKind, recommended, required

if TYPE_CHECKING:
    from kfm_conformance.scenario import ScenarioContext

PROV = "http://www.w3.org/ns/prov#"
DCAT = "http://www.w3.org/ns/dcat#"
WELL_KNOWN_PREFIXES = {
    "prov": PROV,
    "dcat": DCAT,
    "dct": "http://purl.org/dc/terms/",
    "dcterms": "http://purl.org/dc/terms/",
    "spdx": "http://spdx.org/rdf/terms#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
}
SIDECAR_KINDS = ("stac", "prov", "dcat")
_HEX64 = re.compile(r"(?:1220)?([0-9a-fA-F]{64})")
_CHECKSUM_KEY = re.compile(r"checksum|digest|sha256|hash", re.IGNORECASE)


def load_sidecar(path: Path) -> tuple[Any, str | None]:
    """The parsed JSON document, or ``None`` and why it could not be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, "missing"
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"not JSON: {exc}"


# -- JSON-LD, compact form --------------------------------------------------------------------
def _prefixes(doc: Any) -> dict[str, str]:
    prefixes = dict(WELL_KNOWN_PREFIXES)
    contexts = doc.get("@context") if isinstance(doc, dict) else None
    for context in contexts if isinstance(contexts, list) else [contexts]:
        if isinstance(context, dict):
            for key, value in context.items():
                if isinstance(value, str) and value.endswith(("#", "/")):
                    prefixes[key] = value
                elif isinstance(value, dict) and isinstance(value.get("@id"), str):
                    prefixes[key] = value["@id"]
    return prefixes


def _expand(term: str, prefixes: dict[str, str]) -> str:
    if term in prefixes and not prefixes[term].endswith(("#", "/")):
        return prefixes[term]
    head, colon, tail = term.partition(":")
    if colon and head in prefixes and not tail.startswith("//"):
        return prefixes[head] + tail
    return term


def jsonld_nodes(doc: Any) -> Iterator[tuple[set[str], dict[str, Any]]]:
    """Every node object in a compact JSON-LD document, with its expanded types and with its
    properties keyed by expanded IRI."""
    prefixes = _prefixes(doc)

    def walk(value: Any) -> Iterator[tuple[set[str], dict[str, Any]]]:
        if isinstance(value, list):
            for item in value:
                yield from walk(item)
        elif isinstance(value, dict):
            types = value.get("@type", [])
            type_list = types if isinstance(types, list) else [types]
            expanded_types = {_expand(t, prefixes) for t in type_list if isinstance(t, str)}
            props = {
                _expand(k, prefixes): v
                for k, v in value.items()
                if not k.startswith("@") or k == "@id"
            }
            yield expanded_types, props
            for key, child in value.items():
                if key != "@context":
                    yield from walk(child)

    yield from walk(doc)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _names_output(value: Any, output: Path) -> bool:
    """Whether a value (an href, an @id, a URL) points at the published output file."""
    for text in _strings(value):
        clean = text.split("?")[0].split("#")[0]
        if clean.endswith("/" + output.name) or clean == output.name:
            return True
    return False


def checksum_claims(doc: Any) -> list[str]:
    """sha256 digests the document states, from keys that name a checksum or digest."""
    claims: list[str] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for child_key, child in value.items():
                walk(child, child_key)
        elif isinstance(value, list):
            for child in value:
                walk(child, key)
        elif isinstance(value, str) and _CHECKSUM_KEY.search(key):
            match = _HEX64.fullmatch(value.strip().removeprefix("sha256:"))
            if match:
                claims.append(match.group(1).lower())

    walk(doc)
    return claims


def judge_digest(kind: str, doc: Any, output_sha256: str) -> list[Finding]:
    claims = checksum_claims(doc)
    if not claims:
        return [
            recommended(
                f"provenance.{kind}.checksum",
                False,
                f"the {kind.upper()} sidecar carries no checksum of the output",
                expected=f"sha256 {output_sha256}",
                observed="no checksum",
            )
        ]
    return [
        required(
            f"provenance.{kind}.checksum",
            output_sha256 in claims,
            f"the {kind.upper()} sidecar names another digest: it describes another version "
            "of the output",
            expected=output_sha256,
            observed=claims,
        )
    ]


# -- the three standards ----------------------------------------------------------------------
def judge_stac(doc: Any, output: Path) -> list[Finding]:
    problems = []
    if not isinstance(doc, dict):
        return [required("provenance.stac.item", False, "the STAC sidecar is not a JSON object")]
    if doc.get("type") != "Feature":
        problems.append('"type" is not "Feature"')
    for key, kind in (("stac_version", str), ("id", str), ("properties", dict), ("links", list)):
        if not isinstance(doc.get(key), kind):
            problems.append(f'"{key}" missing or not a {kind.__name__}')
    if "geometry" not in doc:
        problems.append('"geometry" missing (null is allowed)')
    properties = doc.get("properties")
    if not isinstance(properties, dict) or "datetime" not in properties:
        problems.append('"properties.datetime" missing')
    assets = doc.get("assets")
    names_output = isinstance(assets, dict) and any(
        isinstance(a, dict) and _names_output(a.get("href"), output) for a in assets.values()
    )
    return [
        required(
            "provenance.stac.item",
            not problems,
            "the STAC sidecar is not a valid STAC Item: " + "; ".join(problems),
            expected="a STAC Item (type, stac_version, id, geometry, properties.datetime, "
            "links, assets)",
            observed=problems,
        ),
        required(
            "provenance.stac.asset",
            names_output,
            f"no STAC asset's href is the published output ({output.name})",
            expected=f"an asset with href ending in {output.name}",
            observed=sorted(assets) if isinstance(assets, dict) else assets,
        ),
    ]


def judge_prov(doc: Any, output: Path, upstream_url: str) -> list[Finding]:
    nodes = list(jsonld_nodes(doc))
    entities = [p for t, p in nodes if PROV + "Entity" in t]
    activities = [p for t, p in nodes if PROV + "Activity" in t]
    output_entities = [e for e in entities if _names_output(e, output)]
    generated = any(PROV + "wasGeneratedBy" in e for e in output_entities) or any(
        PROV + "generated" in a for a in activities
    )
    used = {text for a in activities for text in _strings(a.get(PROV + "used"))}
    # prov:used may name the upstream directly, or the @id of a node that locates it.
    described = {text for _, props in nodes if props.get("@id") in used for text in _strings(props)}
    used_upstream = upstream_url in used | described
    return [
        required(
            "provenance.prov.entity",
            bool(output_entities) and bool(activities),
            "the PROV-O sidecar has no prov:Entity for the output and prov:Activity for the run",
            expected=f"a prov:Entity naming {output.name}, a prov:Activity",
            observed={"entities": len(entities), "activities": len(activities)},
        ),
        required(
            "provenance.prov.generation",
            generated,
            "the PROV-O sidecar does not say which activity generated the output",
            expected="prov:wasGeneratedBy (or prov:generated)",
            observed="absent",
        ),
        required(
            "provenance.prov.used",
            used_upstream,
            "the PROV-O sidecar does not say that the run used the upstream",
            expected=f"prov:used naming {upstream_url}",
            observed="absent",
        ),
    ]


def judge_dcat(doc: Any, output: Path) -> list[Finding]:
    nodes = list(jsonld_nodes(doc))
    datasets = [p for t, p in nodes if DCAT + "Dataset" in t]
    distributions = [p for t, p in nodes if DCAT + "Distribution" in t]
    reaches_output = any(
        _names_output(d.get(DCAT + "downloadURL"), output)
        or _names_output(d.get(DCAT + "accessURL"), output)
        for d in distributions
    )
    return [
        required(
            "provenance.dcat.dataset",
            bool(datasets) and bool(distributions),
            "the DCAT sidecar has no dcat:Dataset with a dcat:Distribution",
            expected="a dcat:Dataset, a dcat:Distribution",
            observed={"datasets": len(datasets), "distributions": len(distributions)},
        ),
        required(
            "provenance.dcat.distribution",
            reaches_output,
            f"no DCAT distribution's downloadURL or accessURL is the output ({output.name})",
            expected=f"dcat:downloadURL or dcat:accessURL ending in {output.name}",
            observed="absent",
        ),
    ]


def judge_sidecar(
    kind: str, path: Path, *, output: Path, output_sha256: str, upstream_url: str
) -> tuple[list[Finding], Any]:
    """All findings about one declared sidecar, and the document as read (for evidence)."""
    doc, problem = load_sidecar(path)
    readable = required(
        f"provenance.{kind}.present",
        problem is None,
        f"the declared {kind.upper()} sidecar {path.name} is {problem}",
        expected=f"a JSON document at {path.name}",
        observed=problem,
    )
    if problem is not None:
        return [readable], None
    if kind == "stac":
        findings = judge_stac(doc, output)
    elif kind == "prov":
        findings = judge_prov(doc, output, upstream_url)
    else:
        findings = judge_dcat(doc, output)
    return [readable, *findings, *judge_digest(kind, doc, output_sha256)], doc


# -- scenario-level judgements ----------------------------------------------------------------
def require_declared_sidecars(context: ScenarioContext) -> dict[str, str]:
    declared = context.profile.provenance
    if not declared:
        raise NotApplicable(
            "not declared: the profile declares no provenance sidecars ([provenance])",
            SkipKind.NOT_DECLARED,
        )
    return declared


def judge_declaration(context: ScenarioContext) -> None:
    """The blueprint names three sidecars; a profile that declares fewer gets a warning."""
    missing = [k for k in SIDECAR_KINDS if k not in context.profile.provenance]
    context.judge.recommend(
        "provenance.declared",
        not missing,
        "the profile does not declare every provenance sidecar the blueprint names: "
        + ", ".join(k.upper() for k in missing),
        expected="[provenance] stac, prov and dcat",
        observed=sorted(context.profile.provenance),
    )


def judge_published_sidecars(context: ScenarioContext) -> None:
    """Every declared sidecar is well-formed and describes the output now published."""
    declared = require_declared_sidecars(context)
    workdir = context.sandbox.workdir
    output = context.sandbox.output_path
    state = context.sandbox.output_state()
    context.judge.require(
        "provenance.output",
        state is not None,
        "there is no published output for the sidecars to describe",
    )
    if state is None:  # unreachable: require() raised
        return
    upstream_url = context.origin.url
    documents: dict[str, Any] = {}
    for kind, relpath in sorted(declared.items()):
        findings, doc = judge_sidecar(
            kind,
            workdir / relpath,
            output=output,
            output_sha256=state.sha256,
            upstream_url=upstream_url,
        )
        documents[kind] = doc
        context.judge.apply(findings)
    context.evidence.setdefault("provenance_sidecars", []).append(
        {"output_sha256": state.sha256, "documents": documents}
    )


def judge_sidecars_untouched(context: ScenarioContext) -> None:
    """A run that published nothing left every declared sidecar byte-identical."""
    declared = require_declared_sidecars(context)
    before = context.last_run.files_before
    after = context.sandbox.files()
    changed = {
        relpath: {
            "before": before[relpath].sha256 if relpath in before else "absent",
            "after": after[relpath].sha256 if relpath in after else "absent",
        }
        for relpath in declared.values()
        if (before.get(relpath) and before[relpath].sha256)
        != (after.get(relpath) and after[relpath].sha256)
    }
    context.judge.require(
        "provenance.untouched",
        not changed,
        "a run that published nothing changed the provenance sidecars",
        expected="byte-identical sidecars",
        observed=changed,
    )
