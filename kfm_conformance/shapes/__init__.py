"""The harness's provenance rules and JSON-LD contexts, as data.

- ``*.ttl``: SHACL shapes, one file per standard (``prov.ttl``, ``dcat.ttl``). Every shape
  that judges something carries a stable check ID (``kfmc:check``); its level, as every
  check's, is in :mod:`kfm_conformance.levels`; see ``docs/provenance.md``.
- ``contexts/``: the few well-known JSON-LD contexts the harness resolves from its own copies
  (``contexts/index.json`` maps each context URL to its file). Every other remote context is
  refused: the harness never fetches anything while reading a sidecar.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

#: The harness's own vocabulary, for the check ID of a shape and for the facts of
#: the run it adds to a copy of a sidecar's graph.
KFMC = "urn:kfm-conformance:"
SHAPE_FILES = {"prov": "prov.ttl", "dcat": "dcat.ttl"}


def shapes_text(kind: str) -> str:
    """The SHACL shapes (Turtle) for one sidecar kind (``prov`` or ``dcat``)."""
    return resources.files(__name__).joinpath(SHAPE_FILES[kind]).read_text(encoding="utf-8")


@cache
def well_known_contexts() -> dict[str, dict[str, Any]]:
    """The JSON-LD context documents the harness ships, keyed by the URL they stand for."""
    folder = resources.files(__name__).joinpath("contexts")
    index: dict[str, str] = json.loads(folder.joinpath("index.json").read_text(encoding="utf-8"))
    return {
        url: json.loads(folder.joinpath(name).read_text(encoding="utf-8"))
        for url, name in index.items()
    }
