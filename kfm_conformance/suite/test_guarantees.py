"""Binds every packaged feature file; the steps come from :mod:`kfm_conformance.steps`."""

from pytest_bdd import scenarios

from kfm_conformance.features import FEATURES_DIR

scenarios(str(FEATURES_DIR))
