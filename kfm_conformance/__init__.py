"""kfm-conformance: certifies data pipelines against the KFM v11.2.2 control-plane blueprint."""

import os as _os

__version__ = "0.1.0"

#: The blueprint version whose guarantees this harness checks.
BLUEPRINT_VERSION = "v11.2.2"

if _os.environ.get("KFM_CONFORMANCE_LEAN_IMPORTS") == "1":  # a process the CLI started
    from kfm_conformance import lean_imports as _lean_imports  # noqa: F401
