"""kfm-conformance: certifies data pipelines against the KFM v11.2.2 control-plane blueprint."""

__version__ = "0.1.0"

#: The blueprint version whose guarantees this harness checks.
BLUEPRINT_VERSION = "v11.2.2"
