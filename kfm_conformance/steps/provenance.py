"""Step definitions for the provenance guarantee; the judging is in
:mod:`kfm_conformance.provenance`."""

from __future__ import annotations

from pytest_bdd import given, then

from kfm_conformance import provenance
from kfm_conformance.scenario import ScenarioContext


@given("the profile declares provenance sidecars")
def declares_sidecars(kfm: ScenarioContext) -> None:
    provenance.require_declared_sidecars(kfm)


@then("the profile declares a STAC, a PROV-O and a DCAT sidecar")
def declares_all_three(kfm: ScenarioContext) -> None:
    provenance.judge_declaration(kfm)


@then("every declared sidecar describes the published output")
def sidecars_describe_output(kfm: ScenarioContext) -> None:
    provenance.judge_published_sidecars(kfm)


@then("the declared sidecars are byte-identical to before")
def sidecars_untouched(kfm: ScenarioContext) -> None:
    provenance.judge_sidecars_untouched(kfm)
