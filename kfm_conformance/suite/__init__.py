"""The packaged test suite: the feature files bound to pytest-bdd, run by the CLI."""
