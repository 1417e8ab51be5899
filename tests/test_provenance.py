"""Unit tests of the provenance judgements: rdflib reading (every JSON-LD form, Turtle, no
remote context ever fetched), the SHACL shapes (one violation per shape, with focus node and
path), STAC through pystac, and the compliant pipelines whose sidecars the libraries write."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, REPO, certify, guarantee_row, load_report
from rdflib import Graph

from kfm_conformance.profile import parse_profile
from kfm_conformance.provenance import (
    RunFacts,
    SidecarUnreadable,
    judge_rdf,
    judge_sidecar,
    judge_stac,
    load_shapes,
    multihash_matches,
    names_output,
    parse_rdf,
    rdf_format,
)
from kfm_conformance.verdict import ConfigurationError, Finding, Level

sys.path.insert(0, str(REPO / "reference"))
sys.path.insert(0, str(FIXTURES))
import provenance_library_sidecars as library  # noqa: E402
import provenance_sidecars as reference  # noqa: E402

URL = "http://127.0.0.1:1/data.json"
COMPLIANT = sorted((FIXTURES / "compliant").glob("provenance_*/profile.toml"))


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every test here runs with outgoing connections refused (and recorded)."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise AssertionError(f"the harness tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture
def published(tmp_path: Path) -> RunFacts:
    output = tmp_path / "out" / "data.parquet"
    output.parent.mkdir()
    output.write_bytes(b"published bytes")
    return RunFacts(output, hashlib.sha256(b"published bytes").hexdigest(), URL)


def _failed(findings: list[Finding]) -> list[str]:
    return sorted({f.check for f in findings if not f.ok})


def _reference_documents(facts: RunFacts) -> dict[str, dict[str, Any]]:
    return reference.sidecar_documents(
        output=str(facts.output),
        sha256=facts.output_sha256,
        rows=3,
        upstream_url=URL,
        run_id="run-1",
        job="job",
    )


def _judge_text(kind: str, text: str, fmt: str, facts: RunFacts) -> list[Finding]:
    sidecar = facts.output.parent / f"sidecar.{kind}"
    return judge_rdf(kind, parse_rdf(text, fmt=fmt, base=sidecar.as_uri()), facts)


def _verdicts(findings: list[Finding]) -> list[tuple[str, bool]]:
    return sorted((f.check, f.ok) for f in findings)


# -- every serialization is judged the same way -----------------------------------------------
@pytest.mark.parametrize("kind", ["prov", "dcat"])
def test_every_serialization_of_one_graph_is_judged_the_same(
    kind: str, published: RunFacts
) -> None:
    compact = json.dumps(_reference_documents(published)[kind])
    base = (published.output.parent / f"sidecar.{kind}").as_uri()
    graph = parse_rdf(compact, fmt="json-ld", base=base)
    forms = {
        "compact (hand-written, inline context)": (compact, "json-ld"),
        "expanded (rdflib)": (graph.serialize(format="json-ld"), "json-ld"),
        "compact (rdflib)": (
            graph.serialize(format="json-ld", context=library.COMPACT_CONTEXT, auto_compact=True),
            "json-ld",
        ),
        "turtle (rdflib)": (graph.serialize(format="turtle"), "turtle"),
    }
    judged = {name: _verdicts(_judge_text(kind, t, f, published)) for name, (t, f) in forms.items()}
    expected = judged["compact (hand-written, inline context)"]
    assert all(ok for _, ok in expected), expected
    assert all(v == expected for v in judged.values()), judged


def test_flattened_jsonld_and_a_scoped_context_read_alike(published: RunFacts) -> None:
    flattened = {
        "@context": {"p": "http://www.w3.org/ns/prov#", "s": "http://spdx.org/rdf/terms#"},
        "@graph": [
            {
                "@id": "_:out",
                "@type": "p:Entity",
                "p:atLocation": {"@id": "data.parquet"},
                "p:wasGeneratedBy": {"@id": "urn:run"},
                "s:checksum": {"@id": "_:sum"},
            },
            {"@id": "_:sum", "s:checksumValue": published.output_sha256},
            {"@id": "urn:run", "@type": "p:Activity", "p:used": {"@id": URL}},
        ],
    }
    scoped = {
        "@context": {
            "Entity": "http://www.w3.org/ns/prov#Entity",
            "generatedBy": {
                "@id": "http://www.w3.org/ns/prov#wasGeneratedBy",
                "@context": {"used": {"@id": "http://www.w3.org/ns/prov#used", "@type": "@id"}},
            },
            "location": {"@id": "http://www.w3.org/ns/prov#atLocation", "@type": "@id"},
        },
        "@type": "Entity",
        "location": "./data.parquet",
        "generatedBy": {
            "@id": "urn:run",
            "@type": "http://www.w3.org/ns/prov#Activity",
            "used": URL,
        },
    }
    assert _failed(_judge_text("prov", json.dumps(flattened), "json-ld", published)) == []
    # The scoped document states no checksum: only the strict rule is broken.
    findings = _judge_text("prov", json.dumps(scoped), "json-ld", published)
    assert _failed(findings) == ["provenance.prov.checksum-present"]
    assert [f.level for f in findings if not f.ok] == ["recommended"]


# -- remote contexts are never fetched --------------------------------------------------------
@pytest.fixture
def context_server() -> Iterator[tuple[str, list[str]]]:
    """A local server that would serve a JSON-LD context, and the requests it got."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            body = json.dumps({"@context": {"prov": "http://www.w3.org/ns/prov#"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/ld+json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/context.jsonld", requests
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("where", ["@context", "list", "@import", "scoped"])
def test_a_remote_context_is_refused_without_a_connection(
    where: str, context_server: tuple[str, list[str]], no_network: list[Any]
) -> None:
    url, requests = context_server
    contexts: dict[str, Any] = {
        "@context": url,
        "list": [{"x": "urn:x#"}, url],
        "@import": {"@import": url, "@version": 1.1},
        "scoped": {"p": {"@id": "http://www.w3.org/ns/prov#p", "@context": url}},
    }
    doc = {"@context": contexts[where], "@id": "urn:a", "prov:p": {"p": 1}}
    with pytest.raises(SidecarUnreadable) as refused:
        parse_rdf(json.dumps(doc), fmt="json-ld", base="file:///x/sidecar.jsonld")
    assert url in str(refused.value) and "inline" in str(refused.value)
    assert requests == [] and no_network == []


def test_a_well_known_context_is_read_from_the_harness_copy(published: RunFacts) -> None:
    doc = {
        "@context": "https://www.w3.org/ns/prov.jsonld",
        "@graph": [
            {
                "@id": "urn:out",
                "@type": "Entity",
                "atLocation": "./data.parquet",
                "wasGeneratedBy": "urn:run",
            },
            {"@id": "urn:run", "@type": "Activity", "used": URL},
        ],
    }
    findings = _judge_text("prov", json.dumps(doc), "json-ld", published)
    assert _failed(findings) == ["provenance.prov.checksum-present"]


def test_unreadable_sidecars_name_the_problem(published: RunFacts, tmp_path: Path) -> None:
    with pytest.raises(SidecarUnreadable, match="not JSON"):
        parse_rdf("{", fmt="json-ld", base="file:///x/a.jsonld")
    with pytest.raises(SidecarUnreadable, match="not valid turtle"):
        parse_rdf("<a> <b> .", fmt="turtle", base="file:///x/a.ttl")
    missing, _ = judge_sidecar("prov", tmp_path / "absent.jsonld", published)
    assert _failed(missing) == ["provenance.prov.present"]
    odd = tmp_path / "prov.rdf"
    odd.write_text("<urn:a> <urn:b> <urn:c> .")
    unreadable, _ = judge_sidecar("prov", odd, published)
    assert _failed(unreadable) == ["provenance.prov.readable"]
    assert "declare it" in next(f.message for f in unreadable if not f.ok)
    declared, _ = judge_sidecar("prov", odd, published, declared_format="turtle")
    assert "provenance.prov.readable" not in _failed(declared)


def test_format_follows_the_declaration_else_the_extension() -> None:
    assert rdf_format("out/a.jsonld") == rdf_format("out/a.JSON") == "json-ld"
    assert rdf_format("out/a.ttl") == "turtle"
    assert rdf_format("out/a.jsonld", "turtle") == "turtle"
    with pytest.raises(SidecarUnreadable):
        rdf_format("out/a.xml")


def test_profile_declares_sidecar_formats(tmp_path: Path) -> None:
    base = {"pipeline": {"name": "x", "command": ["x"], "output": "out/x.parquet"}}
    ok = parse_profile(
        {**base, "provenance": {"prov": "p.ttl", "prov_format": "turtle"}}, tmp_path / "p.toml"
    )
    assert ok.provenance["prov_format"] == "turtle"
    with pytest.raises(ConfigurationError, match=r"provenance\.dcat_format"):
        parse_profile({**base, "provenance": {"dcat_format": "rdf/xml"}}, tmp_path / "p.toml")


# -- the shapes: one violation per broken rule, with focus node and path ----------------------
def test_every_shape_has_a_check_id_and_its_level_is_in_levels() -> None:
    from kfm_conformance.levels import finding_is_recommended

    for kind in ("prov", "dcat"):
        _, rules = load_shapes(kind)
        checks = [r.check for r in rules.values()]
        assert len(checks) == len(set(checks)) >= 4
        assert all(c.startswith(f"provenance.{kind}.") for c in checks)
        # Both levels occur: the checksum's presence is a SHOULD, the rest MUSTs.
        assert [c for c in checks if finding_is_recommended(c)] == [
            f"provenance.{kind}.checksum-present"
        ]
        assert all(r.comment for r in rules.values())


def _prov(facts: RunFacts, **changes: Any) -> dict[str, Any]:
    doc = _reference_documents(facts)["prov"]
    output, run, _upstream = doc["@graph"]
    for key, value in changes.items():
        node, _, prop = key.partition("__")
        target = output if node == "output" else run
        if value is None:
            del target[prop.replace("_", ":", 1)]
        else:
            target[prop.replace("_", ":", 1)] = value
    return doc


@pytest.mark.parametrize(
    ("changes", "check", "path"),
    [
        ({"output__@type": "prov:Agent"}, "provenance.prov.entity", "rdf-syntax-ns#type"),
        ({"output__prov_wasGeneratedBy": None}, "provenance.prov.generation", "wasGeneratedBy"),
        ({"run__prov_used": {"@id": "urn:other"}}, "provenance.prov.used", "prov#used"),
        (
            {"output__spdx_checksum": {"spdx:checksumValue": "0" * 64}},
            "provenance.prov.checksum",
            "spdx.org/rdf/terms#checksum",
        ),
        ({"output__spdx_checksum": None}, "provenance.prov.checksum-present", "#checksum"),
    ],
)
def test_each_prov_shape_reports_its_violation(
    changes: dict[str, Any], check: str, path: str, published: RunFacts
) -> None:
    if "output__@type" in changes:  # "@type" is not a prefixed name
        doc = _reference_documents(published)["prov"]
        doc["@graph"][0]["@type"] = changes["output__@type"]
    else:
        doc = _prov(published, **changes)
    findings = _judge_text("prov", json.dumps(doc), "json-ld", published)
    broken = [f for f in findings if not f.ok]
    assert [f.check for f in broken] == [check]
    assert path in broken[0].observed["path"] and broken[0].observed["focus_node"]
    level = "recommended" if check.endswith("-present") else "required"
    assert broken[0].level == level


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (lambda d: d.update({"@type": "dcat:Catalog"}), "provenance.dcat.dataset"),
        (
            lambda d: d["dcat:distribution"].update({"dcat:downloadURL": {"@id": URL}}),
            "provenance.dcat.distribution",
        ),
        (
            lambda d: d["dcat:distribution"]["spdx:checksum"].update(
                {"spdx:checksumValue": "0" * 64}
            ),
            "provenance.dcat.checksum",
        ),
        (lambda d: d["dcat:distribution"].pop("spdx:checksum"), "provenance.dcat.checksum-present"),
    ],
)
def test_each_dcat_shape_reports_its_violation(change: Any, check: str, published: RunFacts):
    doc = _reference_documents(published)["dcat"]
    change(doc)
    broken = [f for f in _judge_text("dcat", json.dumps(doc), "json-ld", published) if not f.ok]
    assert [f.check for f in broken] == [check]
    assert broken[0].observed["focus_node"] and broken[0].observed["path"]


def test_one_finding_per_violation(published: RunFacts) -> None:
    doc = _reference_documents(published)["prov"]
    second = dict(doc["@graph"][0], **{"@id": "urn:second"})
    for entity in (doc["@graph"][0], second):
        del entity["prov:wasGeneratedBy"]
    doc["@graph"].append(second)
    broken = [f for f in _judge_text("prov", json.dumps(doc), "json-ld", published) if not f.ok]
    assert sorted(f.observed["focus_node"] for f in broken) == sorted(
        [doc["@graph"][0]["@id"], "urn:second"]
    )


def test_inverse_and_qualified_prov_forms_in_turtle(published: RunFacts) -> None:
    turtle = f"""
        @prefix prov: <http://www.w3.org/ns/prov#> .
        <data.parquet> a prov:Entity ;
            prov:qualifiedGeneration [ a prov:Generation ; prov:activity <urn:run> ] .
        <urn:run> a prov:Activity ;
            prov:qualifiedUsage [ a prov:Usage ; prov:entity [ prov:atLocation "{URL}" ] ] .
        <urn:other-run> a prov:Activity ; prov:generated <data.parquet> ; prov:used <{URL}> .
    """
    findings = _judge_text("prov", turtle, "turtle", published)
    assert _failed(findings) == ["provenance.prov.checksum-present"]


def test_an_untyped_activity_is_still_judged(published: RunFacts) -> None:
    turtle = """
        @prefix prov: <http://www.w3.org/ns/prov#> .
        <data.parquet> a prov:Entity ; prov:wasGeneratedBy <urn:run> .
        <urn:run> prov:used <urn:not-the-upstream> .
    """
    findings = _judge_text("prov", turtle, "turtle", published)
    assert _failed(findings) == [
        "provenance.prov.checksum-present",
        "provenance.prov.generation",
        "provenance.prov.used",
    ]


def test_a_checksum_of_another_algorithm_is_not_compared(published: RunFacts) -> None:
    doc = _reference_documents(published)["dcat"]
    doc["dcat:distribution"]["spdx:checksum"] = {
        "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_md5"},
        "spdx:checksumValue": "0" * 32,
    }
    assert _failed(_judge_text("dcat", json.dumps(doc), "json-ld", published)) == []


def test_names_output(published: RunFacts) -> None:
    assert names_output(published.output_uri, published)
    assert names_output("./data.parquet?v=2", published)
    assert names_output("https://data.example/kfm/data.parquet", published)
    assert not names_output(URL, published)
    assert not names_output("./data.parquet.bak", published)


# -- STAC through pystac ----------------------------------------------------------------------
def test_stac_item_from_pystac_and_the_reference(published: RunFacts) -> None:
    sidecar = published.output.parent / "data.stac.json"
    built = library.stac_item("data.parquet", published.output_sha256, URL)
    interval = library.stac_item("data.parquet", published.output_sha256, URL, interval=True)
    hand = _reference_documents(published)["stac"]  # STAC 1.0.0, migrated by pystac
    for doc in (built, interval, hand):
        assert _failed(judge_stac(doc, sidecar, published)) == []


@pytest.mark.parametrize(
    ("change", "failed"),
    [
        (lambda d: d.pop("links"), ["provenance.stac.item"]),
        (lambda d: d.update({"type": "Collection"}), ["provenance.stac.item"]),
        (
            lambda d: d["properties"].update({"datetime": None}),
            ["provenance.stac.datetime", "provenance.stac.item"],
        ),
        (lambda d: d["assets"].update({"data": {"href": URL}}), ["provenance.stac.asset"]),
        (
            lambda d: d["assets"]["data"].update({"file:checksum": "1220" + "0" * 64}),
            ["provenance.stac.checksum"],
        ),
        (lambda d: d["assets"]["data"].pop("file:checksum"), ["provenance.stac.checksum-present"]),
        (  # sha-1 (multihash 0x11): a checksum the harness cannot verify is a warning
            lambda d: d["assets"]["data"].update({"file:checksum": "1114" + "0" * 40}),
            ["provenance.stac.checksum-algorithm"],
        ),
    ],
)
def test_stac_checks_fail(change: Any, failed: list[str], published: RunFacts) -> None:
    doc = library.stac_item("data.parquet", published.output_sha256, URL)
    change(doc)
    findings = judge_stac(doc, published.output.parent / "data.stac.json", published)
    assert _failed(findings) == failed
    levels = {f.level for f in findings if not f.ok}
    should = {"provenance.stac.checksum-present", "provenance.stac.checksum-algorithm"}
    assert levels == {Level.RECOMMENDED if set(failed) <= should else Level.REQUIRED}


def test_multihash(published: RunFacts) -> None:
    data = published.output.read_bytes()
    assert multihash_matches("1220" + published.output_sha256, published.output) is True
    assert multihash_matches("1340" + hashlib.sha512(data).hexdigest(), published.output)
    assert multihash_matches("1220" + "0" * 64, published.output) is False
    assert multihash_matches("1210" + published.output_sha256, published.output) is False
    assert multihash_matches("zz", published.output) is False
    assert multihash_matches("1e20" + "0" * 64, published.output) is None


def test_library_graphs_pass(published: RunFacts) -> None:
    sha = published.output_sha256
    prov = library.prov_graph(published.output_uri, sha, URL, "urn:run")
    dcat = library.dcat_graph(published.output_uri, sha, "urn:dataset")
    document = library.prov_document("data.parquet", URL, "r1")
    from_prov = Graph().parse(
        data=document.serialize(format="rdf", rdf_format="turtle"), format="turtle"
    )
    assert _failed(judge_rdf("prov", prov, published)) == []
    assert _failed(judge_rdf("dcat", dcat, published)) == []
    assert _failed(judge_rdf("prov", from_prov, published)) == ["provenance.prov.checksum-present"]


# -- the compliant pipelines whose sidecars the libraries write -------------------------------
@pytest.mark.parametrize("profile", COMPLIANT, ids=[p.parent.name for p in COMPLIANT])
def test_library_serialized_sidecars_are_certified(
    profile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # the CLI runs in a child process, with its own origin
    code, out, err = certify(
        "certify",
        "--profile",
        str(profile),
        "--only",
        "provenance",
        "--report-dir",
        str(tmp_path / "report"),
    )
    row = guarantee_row(load_report(tmp_path / "report"), "provenance")
    assert code == 0, (out, err[-2000:])
    assert row["verdict"] in ("pass", "warn"), row
    judged = [s for s in row["scenarios"] if "describe" in s["check_id"]]
    assert judged and all(s["verdict"] in ("pass", "warn") for s in judged)
    checks = {f["check"] for s in judged for f in s["findings"]}
    assert {
        "provenance.prov.used",
        "provenance.dcat.distribution",
        "provenance.stac.asset",
    } <= checks


def test_there_are_compliant_library_pipelines() -> None:
    assert {p.parent.name for p in COMPLIANT} >= {
        "provenance_pystac_rdflib_expanded",
        "provenance_rdflib_compact",
        "provenance_rdflib_turtle",
        "provenance_prov_package",
    }
