"""Step definitions for the HTTP and data guarantees.

Each step is one call into :mod:`kfm_conformance.scenario`; the judging lives there. The
``kfm`` fixture (from :mod:`kfm_conformance.plugin`) is the scenario's context.
"""

from __future__ import annotations

import re

from pytest_bdd import given, parsers, then, when

from kfm_conformance import expectations
from kfm_conformance.scenario import ScenarioContext
from kfm_conformance.upstream import NAMED_BODIES

_NAMED = "|".join(re.escape(name) for name in NAMED_BODIES)
_QUOTED = re.compile(r'"([^"]+)"')


def _outcomes(text: str) -> list[str]:
    """``"a" or "b"`` -> ``["a", "b"]``."""
    found = _QUOTED.findall(text)
    if not found:
        raise ValueError(f"expected quoted outcome names, got {text!r}")
    return found


# -- Given: the upstream ------------------------------------------------------------------------
@given(parsers.re(r"the upstream serves (?P<count>\d+) rows$"))
def upstream_serves_rows(kfm: ScenarioContext, count: str) -> None:
    kfm.upstream.serve_rows(int(count))


@given(parsers.re(r'the upstream serves (?P<count>\d+) rows last modified "(?P<value>[^"]*)"'))
def upstream_serves_rows_last_modified(kfm: ScenarioContext, count: str, value: str) -> None:
    kfm.upstream.serve_rows(int(count), last_modified=value)


@given(parsers.re(r"the upstream serves (?P<count>\d+) rows with the entity tag (?P<etag>.+)$"))
def upstream_serves_rows_with_etag(kfm: ScenarioContext, count: str, etag: str) -> None:
    kfm.upstream.serve_rows(int(count), etag=etag.strip())


@given(parsers.re(r"the upstream serves (?P<count>\d+) rows and ignores conditional requests"))
def upstream_ignores_conditionals(kfm: ScenarioContext, count: str) -> None:
    kfm.upstream.serve_rows(int(count), honour_conditionals=False)


@given(parsers.re(r"the upstream serves (?P<count>\d+) rows without any validator"))
def upstream_without_validators(kfm: ScenarioContext, count: str) -> None:
    kfm.upstream.serve_rows(int(count), last_modified=None)


@given(parsers.re(r"the upstream serves (?P<count>\d+) rows in a scrambled order"))
def upstream_scrambled(kfm: ScenarioContext, count: str) -> None:
    kfm.upstream.serve_scrambled_rows(int(count))


@given(parsers.re(rf"the upstream serves (?P<body>{_NAMED})$"))
def upstream_serves_named(kfm: ScenarioContext, body: str) -> None:
    kfm.upstream.serve(body)


@given(parsers.re(r"the upstream's next answer is (?P<answer>.+)$"))
def upstream_next_answer(kfm: ScenarioContext, answer: str) -> None:
    kfm.script_answer(answer)


@given("the pipeline has published once")
def published_once(kfm: ScenarioContext) -> None:
    kfm.publish_once()


@given("the profile declares a size cap")
def declares_size_cap(kfm: ScenarioContext) -> None:
    kfm.require_declared("max_body_bytes")


@given("the profile declares a fetch time bound")
def declares_fetch_bound(kfm: ScenarioContext) -> None:
    kfm.require_declared("fetch_timeout_s")


@given("the pipeline has published a small version once")
def published_small_once(kfm: ScenarioContext) -> None:
    kfm.upstream.serve_rows(10)
    kfm.publish_once()


# -- When ------------------------------------------------------------------------------------
@when("the pipeline runs")
@when("the pipeline runs again")
def pipeline_runs(kfm: ScenarioContext) -> None:
    kfm.run()


@when(parsers.re(r"the pipeline runs (?P<times>\d+) more times"))
def pipeline_runs_more(kfm: ScenarioContext, times: str) -> None:
    for _ in range(int(times)):
        kfm.run()


@when("the pipeline runs without an upstream URL")
def pipeline_runs_without_url(kfm: ScenarioContext) -> None:
    kfm.run("run without an upstream URL", src="")


@when("the pipeline runs against an upstream that refuses connections")
def pipeline_runs_against_closed_port(kfm: ScenarioContext) -> None:
    kfm.run("run against a closed port", src=kfm.closed_port_url())


@when("the published output is deleted")
def output_deleted(kfm: ScenarioContext) -> None:
    kfm.delete_output()


@when(parsers.re(r"the upstream moves to a new version of (?P<count>\d+) rows"))
def upstream_new_version(kfm: ScenarioContext, count: str) -> None:
    kfm.upstream.serve_rows(int(count))


@when(parsers.re(r"the upstream moves to a new version holding (?P<body>.+)$"))
def upstream_new_version_holding(kfm: ScenarioContext, body: str) -> None:
    kfm.upstream.serve(body)


@when("the upstream goes back to the published version")
def upstream_back_to_published(kfm: ScenarioContext) -> None:
    kfm.upstream.serve_published_version_again()


@when(
    parsers.re(
        r"the pipeline runs (?P<times>\d+) times in fresh working directories against "
        r"(?P<answer>.+)$"
    )
)
def runs_in_fresh_dirs(kfm: ScenarioContext, times: str, answer: str) -> None:
    kfm.run_repeatedly_in_fresh_dirs(int(times), answer)


@when("the pipeline publishes it in two fresh working directories")
def publishes_in_two_dirs(kfm: ScenarioContext) -> None:
    kfm.publish_in_fresh_dirs(gzip_second=False)


@when("the pipeline publishes it in two fresh working directories, the second time gzip-encoded")
def publishes_in_two_dirs_gzip(kfm: ScenarioContext) -> None:
    kfm.publish_in_fresh_dirs(gzip_second=True)


@when("a reader polls the output while the pipeline publishes it")
@when("a reader polls the output while the pipeline runs again")
def reader_polls(kfm: ScenarioContext) -> None:
    kfm.run_with_reader()


@given(parsers.re(r"the upstream's next answer is (?P<slowness>.+) lasting twice the bound$"))
def slow_answer(kfm: ScenarioContext, slowness: str) -> None:
    kfm.script_slow_answer(slowness)


# -- Then: exit codes ---------------------------------------------------------------------------
@then(parsers.re(r"it exits with the code declared for (?P<outcomes>.+)$"))
def exits_with_declared(kfm: ScenarioContext, outcomes: str) -> None:
    expectations.exit_code(kfm, *_outcomes(outcomes))


@then("it exits with a success code")
def exits_success(kfm: ScenarioContext) -> None:
    expectations.success_code(kfm)


@then("it exits with a failure code")
def exits_failure(kfm: ScenarioContext) -> None:
    expectations.failure_code(kfm)


@then("every run exits with a success code")
def every_run_success(kfm: ScenarioContext) -> None:
    expectations.every_run_succeeded(kfm)


@then("every run exits with the same code")
def every_run_same_code(kfm: ScenarioContext) -> None:
    expectations.same_code_every_time(kfm)


@then(parsers.re(r"that code is the one declared for (?P<outcomes>.+)$"))
def that_code_is_declared(kfm: ScenarioContext, outcomes: str) -> None:
    expectations.exit_code(kfm, *_outcomes(outcomes))


# -- Then: output and state -----------------------------------------------------------------------
@then("the output holds the upstream's rows in the upstream's order")
def output_holds_rows(kfm: ScenarioContext) -> None:
    expectations.output_rows(kfm)


@then("the output's bytes and inode are unchanged")
def output_untouched(kfm: ScenarioContext) -> None:
    expectations.output_untouched(kfm, inode=True)


@then("the output's bytes are unchanged")
def output_bytes_unchanged(kfm: ScenarioContext) -> None:
    expectations.output_untouched(kfm, inode=False)


@then("the output and the run-state are byte-identical to before")
def files_unchanged(kfm: ScenarioContext) -> None:
    expectations.files_unchanged_by_last_run(kfm)


@then("nothing temporary is left beside the output")
def no_temporaries(kfm: ScenarioContext) -> None:
    expectations.no_temporaries(kfm, since_last_run=True)


@then("nothing is published")
def nothing_published(kfm: ScenarioContext) -> None:
    expectations.nothing_published(kfm)


@then("both outputs are byte-identical")
def both_outputs_identical(kfm: ScenarioContext) -> None:
    expectations.outputs_identical_across_dirs(kfm)


@then("the reader only ever saw no output or a complete published version")
def reader_saw_whole_versions(kfm: ScenarioContext) -> None:
    expectations.reader_saw_whole_versions(kfm)


# -- Then: requests --------------------------------------------------------------------------------
@then(parsers.re(r'the request carried If-Modified-Since "(?P<value>[^"]*)" exactly'))
def request_carried_ims(kfm: ScenarioContext, value: str) -> None:
    expectations.request_header(kfm, "If-Modified-Since", value)


@then(parsers.re(r"the request carried If-None-Match (?P<etag>.+) exactly"))
def request_carried_inm(kfm: ScenarioContext, etag: str) -> None:
    expectations.request_header(kfm, "If-None-Match", etag.strip())


@then(parsers.re(r"the request carried no (?P<header>[A-Za-z-]+) header"))
def request_carried_no_header(kfm: ScenarioContext, header: str) -> None:
    expectations.request_header(kfm, header, None)


@then("any If-Modified-Since it sent is the stored value, byte for byte")
def ims_is_stored_value(kfm: ScenarioContext) -> None:
    expectations.ims_verbatim_if_sent(kfm)


@then(parsers.re(r"the upstream answered (?P<status>\d{3})"))
def upstream_answered(kfm: ScenarioContext, status: str) -> None:
    expectations.status_answered(kfm, int(status))


@then("it sends only validators of the version it has published")
def sends_validators_of_published(kfm: ScenarioContext) -> None:
    expectations.validators_of_published_version(kfm)


@then("no process of any run was still alive after that run exited")
def no_stragglers(kfm: ScenarioContext) -> None:
    expectations.no_stragglers(kfm)
