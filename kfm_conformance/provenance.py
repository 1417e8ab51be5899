"""Judging provenance sidecars: a STAC Item, a PROV-O document and a DCAT description.

The blueprint promises "full provenance: STAC + PROV-O + DCAT". A profile declares where the
pipeline writes each sidecar (``[provenance]``); after a publication the harness reads them
back and checks, from the outside, that each one is valid for its standard and describes the
data that was actually published. The standards' own libraries do the reading:

- PROV-O and DCAT are read as RDF by rdflib: JSON-LD in any form (compact, expanded,
  flattened, inline contexts) or Turtle, by the format the profile declares
  (``prov_format``/``dcat_format``) or else by the file extension. Remote JSON-LD contexts are
  never fetched: rdflib's context loader is replaced, for the parse, by one that serves only
  the well-known contexts the harness ships (:mod:`kfm_conformance.shapes`) and refuses every
  other with a message naming the context to inline.
- The rules are SHACL shapes shipped as data (``kfm_conformance/shapes/*.ttl``) and judged by
  pyshacl. The facts of the run (the terms that name the output, the upstream URL, the
  output's sha256) are added to a copy of the sidecar's graph as triples of one
  ``kfmc:Publication`` node, which the shapes' SPARQL constraints read. Each shape carries a
  stable check ID (its level, as every check's, is in :mod:`kfm_conformance.levels`); every
  violation becomes one :class:`Finding` with its focus node and path.
- STAC Items are read by pystac (``Item.from_dict``, assets, the file extension) and validated
  offline against the STAC core Item JSON Schema pystac ships, after pystac's own migration to
  that version; no schema is fetched, so extension schemas are not validated.

What "names the output" means: an IRI or a value that, without query and fragment, is the
output's file URI, its file name, or a path or URL ending in ``/<file name>``. Relative
references resolve against the sidecar's own location.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfm_conformance.shapes import KFMC, shapes_text, well_known_contexts
from kfm_conformance.verdict import (
    Finding,
    HarnessError,
    NotApplicable,
    SkipKind,
    fact,
)

if TYPE_CHECKING:
    from rdflib import Graph

    from kfm_conformance.scenario import ScenarioContext

SIDECAR_KINDS = ("stac", "prov", "dcat")
RDF_KINDS = ("prov", "dcat")
RDF_FORMATS = ("json-ld", "turtle")
#: The RDF format a sidecar's extension implies when the profile declares none.
FORMAT_BY_EXTENSION = {".jsonld": "json-ld", ".json": "json-ld", ".ttl": "turtle"}
#: Multihash codes (https://github.com/multiformats/multicodec) the STAC check can verify.
MULTIHASH_ALGORITHMS = {0x12: "sha256", 0x13: "sha512"}
PUBLICATION = KFMC + "publication"


class SidecarUnreadable(Exception):
    """A sidecar could not be read as its standard: the message says why, in one line."""


class RemoteContextRefused(SidecarUnreadable):
    """A JSON-LD sidecar needs a remote context the harness does not ship."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"it needs the remote JSON-LD context {url}, which the harness never fetches: "
            "inline that context in the document (or expand it)"
        )
        self.url = url


@dataclass(frozen=True)
class RunFacts:
    """What the sidecars must describe: the published output and the upstream it came from."""

    output: Path
    output_sha256: str
    upstream_url: str

    @property
    def output_uri(self) -> str:
        return self.output.resolve().as_uri()


def names_output(reference: str, facts: RunFacts) -> bool:
    """Whether an IRI, href or URL (already resolved, or relative) names the published output."""
    clean = reference.split("?")[0].split("#")[0]
    name = facts.output.name
    return clean in (facts.output_uri, name) or clean.endswith("/" + name)


# -- reading RDF, offline ---------------------------------------------------------------------
_CONTEXT_LOADER_LOCK = threading.Lock()


def _shipped_context(source: Any, *_args: Any, **_kwargs: Any) -> tuple[Any, None]:
    """rdflib's JSON-LD context loader, replaced: only the contexts the harness ships."""
    url = str(source)
    shipped = well_known_contexts().get(url)
    if shipped is None:
        raise RemoteContextRefused(url)
    return copy.deepcopy(shipped), None


@contextmanager
def offline_jsonld_contexts() -> Iterator[None]:
    """While active, rdflib resolves remote JSON-LD contexts (``@context`` strings, scoped
    contexts, ``@import``) from the harness's own copies only, and refuses every other one;
    nothing is fetched."""
    from rdflib.plugins.shared.jsonld import context as jsonld_context

    with _CONTEXT_LOADER_LOCK:
        original = jsonld_context.source_to_json
        jsonld_context.source_to_json = _shipped_context
        try:
            yield
        finally:
            jsonld_context.source_to_json = original


def rdf_format(relpath: str, declared: str | None = None) -> str:
    """The RDF format of a sidecar: the declared one, else the one its extension implies."""
    if declared:
        return declared
    suffix = Path(relpath).suffix.lower()
    if suffix not in FORMAT_BY_EXTENSION:
        raise SidecarUnreadable(
            f"its format cannot be told from the extension {suffix or '(none)'}: declare it "
            "in the profile ([provenance] <kind>_format = json-ld or turtle)"
        )
    return FORMAT_BY_EXTENSION[suffix]


def parse_rdf(text: str, *, fmt: str, base: str) -> Graph:
    """The sidecar's graph. Relative IRIs resolve against ``base`` (the sidecar's URI)."""
    from rdflib import Graph

    graph = Graph()
    try:
        if fmt == "json-ld":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise SidecarUnreadable(f"not JSON: {exc}") from None
            # rdflib's JSON-LD parser warns about its own use of ConjunctiveGraph.
            with offline_jsonld_contexts(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                graph.parse(data=json.dumps(data), format="json-ld", publicID=base, base=base)
        else:
            graph.parse(data=text, format=fmt, publicID=base)
    except SidecarUnreadable:
        raise
    except Exception as exc:  # rdflib raises many types for bad documents
        raise SidecarUnreadable(f"not valid {fmt}: {type(exc).__name__}: {exc}") from None
    return graph


# -- judging RDF with SHACL -------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """One rule of the shapes file: its check ID and what it asks for (its level is in
    :mod:`kfm_conformance.levels`, as every check's)."""

    check: str
    comment: str


def load_shapes(kind: str) -> tuple[Graph, dict[str, Shape]]:
    """The shapes graph for a sidecar kind and its rules keyed by shape IRI."""
    from rdflib import Graph, Namespace
    from rdflib.namespace import RDFS

    kfmc = Namespace(KFMC)
    graph = Graph().parse(data=shapes_text(kind), format="turtle")
    rules = {}
    for shape, check in graph.subject_objects(kfmc.check):
        rules[str(shape)] = Shape(str(check), str(graph.value(shape, RDFS.comment) or ""))
    return graph, rules


def with_run_facts(graph: Graph, facts: RunFacts) -> Graph:
    """A copy of the sidecar's graph plus the facts of the run, on the publication node."""
    from rdflib import Graph, Literal, Namespace, URIRef
    from rdflib.namespace import RDF

    kfmc = Namespace(KFMC)
    data = Graph()
    data += graph
    publication = URIRef(PUBLICATION)
    data.add((publication, RDF.type, kfmc.Publication))
    data.add((publication, kfmc.outputSha256, Literal(facts.output_sha256.lower())))
    terms = set(graph.subjects()) | set(graph.objects())
    for term in terms:
        text = str(term)
        if names_output(text, facts):
            data.add((publication, kfmc.outputReference, term))
        if text == facts.upstream_url:
            data.add((publication, kfmc.upstreamReference, term))
    return data


def _node(term: Any) -> str | None:
    if term is None:
        return None
    return "the publication under test" if str(term) == PUBLICATION else str(term)


_SPARQL_LOCK = threading.Lock()


@lru_cache(maxsize=256)
def _prepared_query(text: str) -> Any:
    """The parsed query, or None when it needs prefixes it does not declare itself."""
    from rdflib.plugins.sparql.algebra import translateQuery
    from rdflib.plugins.sparql.parser import parseQuery

    try:
        return translateQuery(parseQuery(text), None, {})
    except Exception:  # an undeclared prefix: leave it to rdflib, with the graph's prefixes
        return None


def _sorted_prefixes(text: str) -> str:
    """The query with its PREFIX lines in one order (pySHACL writes them in any order)."""
    lines = text.splitlines()
    prefixes = sorted(line for line in lines if line.lstrip().upper().startswith("PREFIX "))
    rest = [line for line in lines if not line.lstrip().upper().startswith("PREFIX ")]
    return "\n".join([*prefixes, *rest])


@contextmanager
def prepared_sparql_queries() -> Iterator[None]:
    """While active, rdflib parses each distinct SPARQL query once. pySHACL asks the same
    constraint query once per focus node, and parsing it (not running it) is most of the cost.
    The shapes declare every prefix they use (``sh:declare``)."""
    from rdflib.plugins.sparql.processor import SPARQLProcessor

    original: Any = SPARQLProcessor.query

    def query(self: Any, query: Any, initBindings: Any = None, *args: Any, **kwargs: Any) -> Any:  # noqa: N803
        if isinstance(query, str):
            query = _prepared_query(_sorted_prefixes(query)) or query
        return original(self, query, initBindings, *args, **kwargs)

    with _SPARQL_LOCK:
        setattr(SPARQLProcessor, "query", query)  # noqa: B010 (a patch mypy need not check)
        try:
            yield
        finally:
            setattr(SPARQLProcessor, "query", original)  # noqa: B010


def judge_rdf(kind: str, graph: Graph, facts: RunFacts) -> list[Finding]:
    """One finding per shape that held, one per violation of a shape that did not."""
    import pyshacl
    from rdflib import Namespace
    from rdflib.namespace import RDF

    sh = Namespace("http://www.w3.org/ns/shacl#")
    shapes, rules = load_shapes(kind)
    with prepared_sparql_queries():
        _conforms, results, _text = pyshacl.validate(
            with_run_facts(graph, facts),
            shacl_graph=shapes,
            inference="none",
            allow_warnings=True,
        )
    violated: dict[str, list[Finding]] = {}
    for result in results.subjects(RDF.type, sh.ValidationResult):
        source = str(results.value(result, sh.sourceShape))
        rule = rules.get(source)
        if rule is None:
            raise HarnessError(f"{kind} shapes: result from a shape without a check ID: {source}")
        focus = _node(results.value(result, sh.focusNode))
        path = _node(results.value(result, sh.resultPath))
        value = _node(results.value(result, sh.value))
        text = str(results.value(result, sh.resultMessage) or rule.comment)
        where = f"focus {focus}" + (f", path {path}" if path else "")
        violated.setdefault(rule.check, []).append(
            fact(
                rule.check,
                False,
                f"the {kind.upper()} sidecar: {text} ({where})",
                expected=rule.comment,
                observed={"focus_node": focus, "path": path, "value": value},
            )
        )
    findings: list[Finding] = []
    for rule in sorted(rules.values(), key=lambda r: r.check):
        if rule.check in violated:
            findings.extend(violated[rule.check])
        else:
            findings.append(fact(rule.check, True, rule.comment, expected=rule.comment))
    return findings


# -- STAC through pystac ----------------------------------------------------------------------
def _refuse_remote_schema(uri: str) -> Any:
    raise HarnessError(f"the STAC core schema refers to {uri}, which the harness never fetches")


def stac_core_problems(doc: dict[str, Any]) -> list[str]:
    """Where a STAC Item breaks the core Item JSON Schema pystac ships (after pystac migrates
    it to that version). Offline: a reference outside pystac's copies is a harness error."""
    from jsonschema import Draft7Validator
    from pystac.serialization import identify_stac_object
    from pystac.serialization.migrate import migrate_to_latest
    from pystac.validation.local_validator import VERSION, get_local_schema_cache
    from referencing import Registry, Resource

    cache = get_local_schema_cache()
    registry: Registry[Any] = Registry(retrieve=_refuse_remote_schema).with_resources(  # type: ignore[call-arg]
        [(uri, Resource.from_contents(schema)) for uri, schema in cache.items()]
    )
    schema = cache[f"https://schemas.stacspec.org/v{VERSION}/item-spec/json-schema/item.json"]
    migrated = migrate_to_latest(copy.deepcopy(doc), identify_stac_object(copy.deepcopy(doc)))
    validator = Draft7Validator(schema, registry=registry)
    problems = []
    for error in sorted(validator.iter_errors(migrated), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        problems.append(f"{where}: {error.message}")
    return problems


def _datetime_set(doc: dict[str, Any]) -> bool:
    from pystac.utils import str_to_datetime

    properties = doc.get("properties")
    if not isinstance(properties, dict):
        return False

    def parses(key: str) -> bool:
        value = properties.get(key)
        if not isinstance(value, str):
            return False
        try:
            str_to_datetime(value)
        except (ValueError, TypeError, OverflowError):
            return False
        return True

    return parses("datetime") or (parses("start_datetime") and parses("end_datetime"))


def multihash_matches(multihash: str, output: Path) -> bool | None:
    """Whether a hex multihash is the output's digest; None for an algorithm not known here."""
    try:
        raw = bytes.fromhex(multihash)
    except ValueError:
        return False
    if len(raw) < 2 or raw[0] not in MULTIHASH_ALGORITHMS:
        return None
    algorithm = MULTIHASH_ALGORITHMS[raw[0]]
    digest = raw[2:]
    if raw[1] != len(digest):
        return False
    return hashlib.new(algorithm, output.read_bytes()).digest() == digest


def judge_stac(doc: Any, sidecar: Path, facts: RunFacts) -> list[Finding]:
    """The STAC Item, read by pystac: valid against the core spec, a datetime, an asset that is
    the output, and that asset's ``file:checksum`` where present."""
    import pystac
    from pystac.extensions.file import FileExtension

    if not isinstance(doc, dict):
        return [fact("provenance.stac.item", False, "the STAC sidecar is not a JSON object")]
    findings = []
    try:
        item = pystac.Item.from_dict(copy.deepcopy(doc), migrate=True, preserve_dict=False)
        problems = stac_core_problems(doc)
    except (
        pystac.STACError,
        pystac.STACTypeError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as exc:
        item = None
        problems = [f"pystac cannot read it as a STAC Item: {type(exc).__name__}: {exc}"]
    findings.append(
        fact(
            "provenance.stac.item",
            not problems,
            "the STAC sidecar is not a valid STAC Item: " + "; ".join(problems[:5]),
            expected="a STAC Item valid against the STAC core Item schema",
            observed=problems[:20],
        )
    )
    findings.append(
        fact(
            "provenance.stac.datetime",
            _datetime_set(doc),
            "the STAC Item sets neither properties.datetime nor start_datetime and end_datetime",
            expected="properties.datetime, or start_datetime and end_datetime",
            observed=doc.get("properties", {})
            if isinstance(doc.get("properties"), dict)
            else doc.get("properties"),
        )
    )
    if item is None:
        return findings
    item.set_self_href(str(sidecar))
    hrefs = {key: asset.get_absolute_href() or asset.href for key, asset in item.assets.items()}
    outputs = {
        key: asset
        for key, asset in item.assets.items()
        if Path(hrefs[key]).resolve() == facts.output.resolve() or names_output(hrefs[key], facts)
    }
    findings.append(
        fact(
            "provenance.stac.asset",
            bool(outputs),
            f"no STAC asset's href is the published output ({facts.output.name})",
            expected=f"an asset whose href resolves to {facts.output.name}",
            observed=hrefs,
        )
    )
    claims = {}
    for key, asset in outputs.items():
        checksum = (
            FileExtension.ext(asset).checksum
            if FileExtension.has_extension(item)
            else asset.extra_fields.get("file:checksum")
        )
        if checksum:
            claims[key] = str(checksum)
    findings.append(
        fact(
            "provenance.stac.checksum-present",
            bool(claims) or not outputs,
            "the STAC asset of the output carries no file:checksum",
            expected=f"file:checksum 1220{facts.output_sha256}",
            observed="no file:checksum",
        )
    )
    for key, claim in sorted(claims.items()):
        matches = multihash_matches(claim, facts.output)
        if matches is None:
            findings.append(
                fact(
                    "provenance.stac.checksum-algorithm",
                    False,
                    f"asset {key}: file:checksum uses a multihash algorithm the harness cannot "
                    "verify",
                    expected="sha2-256 (1220...) or sha2-512 (1340...)",
                    observed=claim,
                )
            )
            continue
        findings.append(
            fact(
                "provenance.stac.checksum",
                matches,
                f"asset {key}: file:checksum names another digest: the STAC Item describes "
                "another version of the output",
                expected="1220" + facts.output_sha256,
                observed=claim,
            )
        )
    return findings


# -- one sidecar ------------------------------------------------------------------------------
def read_sidecar(kind: str, path: Path, declared_format: str | None = None) -> Any:
    """The STAC document (JSON) or the PROV-O/DCAT graph. Raises :class:`SidecarUnreadable`."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SidecarUnreadable(f"not UTF-8 text: {exc}") from None
    if kind == "stac":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise SidecarUnreadable(f"not JSON: {exc}") from None
    return parse_rdf(text, fmt=rdf_format(path.name, declared_format), base=path.resolve().as_uri())


def judge_sidecar(
    kind: str, path: Path, facts: RunFacts, declared_format: str | None = None
) -> tuple[list[Finding], Any]:
    """All findings about one declared sidecar, and the document as read (for evidence)."""
    present = fact(
        f"provenance.{kind}.present",
        path.is_file(),
        f"the declared {kind.upper()} sidecar {path.name} is missing",
        expected=f"a file at {path.name}",
        observed="present" if path.is_file() else "missing",
    )
    if not present.ok:
        return [present], None
    try:
        document = read_sidecar(kind, path, declared_format)
    except SidecarUnreadable as exc:
        return [
            present,
            fact(
                f"provenance.{kind}.readable",
                False,
                f"the {kind.upper()} sidecar {path.name} cannot be read: {exc}",
                observed=str(exc),
            ),
        ], None
    readable = fact(f"provenance.{kind}.readable", True, f"{path.name} reads")
    if kind == "stac":
        return [present, readable, *judge_stac(document, path, facts)], document
    evidence = json.loads(document.serialize(format="json-ld"))
    return [present, readable, *judge_rdf(kind, document, facts)], evidence


# -- scenario-level judgements ----------------------------------------------------------------
def declared_sidecars(declared: dict[str, str]) -> dict[str, str]:
    """The sidecar paths of a ``[provenance]`` table, without its ``*_format`` keys."""
    return {kind: declared[kind] for kind in SIDECAR_KINDS if kind in declared}


def require_declared_sidecars(context: ScenarioContext) -> dict[str, str]:
    declared = declared_sidecars(context.profile.provenance)
    if not declared:
        raise NotApplicable(
            "not declared: the profile declares no provenance sidecars ([provenance])",
            SkipKind.NOT_DECLARED,
        )
    return declared


def judge_declaration(context: ScenarioContext) -> None:
    """The blueprint names three sidecars; a profile that declares fewer gets a warning."""
    declared = declared_sidecars(context.profile.provenance)
    missing = [k for k in SIDECAR_KINDS if k not in declared]
    context.judge.require(
        "provenance.declared",
        not missing,
        "the profile does not declare every provenance sidecar the blueprint names: "
        + ", ".join(k.upper() for k in missing),
        expected="[provenance] stac, prov and dcat",
        observed=sorted(declared),
    )


def judge_published_sidecars(context: ScenarioContext) -> None:
    """Every declared sidecar is valid for its standard and describes the output now
    published."""
    declared = require_declared_sidecars(context)
    workdir = context.sandbox.workdir
    state = context.sandbox.output_state()
    context.judge.require(
        "provenance.output",
        state is not None,
        "there is no published output for the sidecars to describe",
    )
    if state is None:  # unreachable: require() raised
        return
    facts = RunFacts(
        output=context.sandbox.output_path,
        output_sha256=state.sha256,
        upstream_url=context.origin.url,
    )
    documents: dict[str, Any] = {}
    findings: list[Finding] = []
    for kind, relpath in sorted(declared.items()):
        judged, document = judge_sidecar(
            kind,
            workdir / relpath,
            facts,
            declared_format=context.profile.provenance.get(f"{kind}_format"),
        )
        documents[kind] = document
        findings.extend(judged)
    context.evidence.setdefault("provenance_sidecars", []).append(
        {"output_sha256": state.sha256, "documents": documents}
    )
    context.judge.apply(findings)


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
