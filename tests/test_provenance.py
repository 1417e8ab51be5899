"""Unit tests of the provenance judgements on hand-written documents."""

from __future__ import annotations

from pathlib import Path

from kfm_conformance.provenance import (
    checksum_claims,
    jsonld_nodes,
    judge_dcat,
    judge_digest,
    judge_prov,
    judge_stac,
)

OUT = Path("out/data.parquet")
DIGEST = "ab" * 32
URL = "http://127.0.0.1:1/data.json"


def _failed(findings) -> list[str]:
    return [f.check for f in findings if not f.ok]


def test_stac_item_and_asset() -> None:
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": "x", "geometry": None,
        "properties": {"datetime": "2026-01-01T00:00:00Z"}, "links": [],
        "assets": {"data": {"href": "./data.parquet"}},
    }
    assert _failed(judge_stac(item, OUT)) == []
    assert _failed(judge_stac({**item, "type": "Collection"}, OUT)) == ["provenance.stac.item"]
    no_asset = {**item, "assets": {"src": {"href": URL}}}
    assert _failed(judge_stac(no_asset, OUT)) == ["provenance.stac.asset"]
    assert _failed(judge_stac([], OUT)) == ["provenance.stac.item"]


def test_prov_with_full_iris_and_prefixes() -> None:
    compact = {
        "@context": {"p": "http://www.w3.org/ns/prov#"},
        "@graph": [
            {"@id": "urn:out", "@type": "p:Entity", "p:atLocation": "data.parquet",
             "p:wasGeneratedBy": {"@id": "urn:run"}},
            {"@id": "urn:run", "@type": "p:Activity", "p:used": {"@id": "urn:src"}},
            {"@id": "urn:src", "@type": "p:Entity", "p:atLocation": URL},
        ],
    }
    assert _failed(judge_prov(compact, OUT, URL)) == []
    unused = {"@graph": [g for g in compact["@graph"][:2]], "@context": compact["@context"]}
    unused["@graph"][1] = {"@id": "urn:run", "@type": "p:Activity"}
    assert _failed(judge_prov(unused, OUT, URL)) == ["provenance.prov.used"]
    assert "provenance.prov.entity" in _failed(judge_prov({"@graph": []}, OUT, URL))


def test_dcat_distribution() -> None:
    doc = {"@type": "http://www.w3.org/ns/dcat#Dataset",
           "http://www.w3.org/ns/dcat#distribution": {
               "@type": "dcat:Distribution", "dcat:accessURL": "file:///x/out/data.parquet"}}
    assert _failed(judge_dcat(doc, OUT)) == []
    doc["http://www.w3.org/ns/dcat#distribution"]["dcat:accessURL"] = URL
    assert _failed(judge_dcat(doc, OUT)) == ["provenance.dcat.distribution"]
    assert len(list(jsonld_nodes(doc))) == 2


def test_checksums_multihash_and_mismatch() -> None:
    assert checksum_claims({"file:checksum": "1220" + DIGEST}) == [DIGEST]
    assert checksum_claims({"name": DIGEST}) == []  # not a checksum key
    ok = judge_digest("stac", {"checksum": DIGEST}, DIGEST)
    assert [f.ok for f in ok] == [True]
    stale = judge_digest("stac", {"checksum": "cd" * 32}, DIGEST)
    assert [f.ok for f in stale] == [False] and stale[0].level == "required"
    missing = judge_digest("stac", {}, DIGEST)
    assert [f.ok for f in missing] == [False] and missing[0].level == "recommended"
