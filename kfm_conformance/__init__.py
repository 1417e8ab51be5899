"""kfm-conformance: certifies data pipelines against the KFM v11.2.2 control-plane blueprint."""

import os as _os

__version__ = "0.1.0"

#: The blueprint version whose guarantees this harness checks.
BLUEPRINT_VERSION = "v11.2.2"

#: Marks the processes the CLI starts (see :mod:`kfm_conformance.lean_imports`).
LEAN_IMPORTS_ENV = "KFM_CONFORMANCE_LEAN_IMPORTS"

if _os.environ.get(LEAN_IMPORTS_ENV) == "1":  # a process the CLI started
    from kfm_conformance import lean_imports as _lean_imports  # noqa: F401
