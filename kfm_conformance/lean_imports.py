"""Keeps jsonschema from building grammars the harness never uses, in its own processes.

``import jsonschema`` also imports ``rfc3987_syntax`` when it is installed (the
``format-nongpl`` extra brings it), to check the ``iri`` format: that import builds 38 Lark
grammars, about 2 s of CPU, in every process that imports jsonschema. A certification starts
four such processes (the CLI, pytest and two workers), and the test suite about two hundred
certifications. No schema the harness reads uses ``iri`` or ``iri-reference``; the formats it
checks (``uri``, ``date-time``, ``uuid``) come from other packages and are unaffected. The
checkers of three more formats no schema of the harness uses are skipped the same way
(:data:`UNUSED_FORMAT_CHECKERS`).

The CLI imports this module before anything imports jsonschema and marks the environment, so
that the suite's processes it starts do the same (:mod:`kfm_conformance` checks the mark). A
pytest session that merely has the plugin installed is left alone.
"""

from __future__ import annotations

import os
import sys

from kfm_conformance import LEAN_IMPORTS_ENV

#: Format checkers jsonschema imports when their packages are installed, for formats no schema
#: the harness reads uses (``duration``, ``color``, ``uri-template``): isoduration alone is
#: about 50 ms of every process.
UNUSED_FORMAT_CHECKERS = ("isoduration", "webcolors", "uri_template")


def skip_unused_format_checkers() -> None:
    """Make jsonschema skip the checkers of :data:`UNUSED_FORMAT_CHECKERS` (it treats a
    package that fails to import as absent), unless something imported them already."""
    for name in UNUSED_FORMAT_CHECKERS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def skip_iri_grammars() -> None:
    """Make ``import rfc3987_syntax`` fail (jsonschema then skips its ``iri`` checker), unless
    it is already imported."""
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


os.environ[LEAN_IMPORTS_ENV] = "1"
skip_iri_grammars()
skip_unused_format_checkers()
