@telemetry
Feature: Traces through OpenTelemetry
  The blueprint asks to "trace every ingestion + transform step". On every run the harness
  points the pipeline at its own OpenTelemetry endpoint the standard way
  (OTEL_EXPORTER_OTLP_ENDPOINT with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf, OTEL_SERVICE_NAME
  and OTEL_RESOURCE_ATTRIBUTES) and keeps every trace the pipeline exports.

  Every run exports at least one trace with exactly one root span, and the spans name the
  service they come from. The root span's status is ERROR when the run failed and never ERROR
  when it succeeded. The root span should have step spans beneath it (fetch, transform,
  publish), the request to the upstream should be described with the OpenTelemetry HTTP
  semantic conventions, and the trace should carry the run's OpenLineage run id so that a
  reader can go from the lineage to the trace. Metrics are optional: whatever the pipeline
  exports is kept as evidence and never judged.

  @id:a-publishing-run-is-traced-from-its-root-span-down-to-its-steps
  Scenario: A publishing run is traced from its root span down to its steps
    Given the upstream serves 40 rows
    When the pipeline runs
    Then it exits with the code declared for "published"
    And the run exported a trace with exactly one root span
    And the root span's status is not ERROR
    And the spans name the service they come from
    And any metrics the run exported are kept as evidence

  @id:a-publishing-run-s-trace-shows-its-steps-and-its-request-to-the-upstream
  Scenario: A publishing run's trace shows its steps and its request to the upstream
    Given the upstream serves 40 rows
    When the pipeline runs
    Then it exits with the code declared for "published"
    And the root span has step spans beneath it
    And the HTTP request to the upstream is described with the HTTP semantic conventions
    And the trace carries the run's OpenLineage run id

  @id:a-rerun-against-an-unchanged-upstream-is-traced-as-a-success
  Scenario: A rerun against an unchanged upstream is traced as a success
    Given the upstream serves 40 rows
    And the pipeline has published once
    When the pipeline runs again
    Then it exits with the code declared for "not_modified"
    And the run exported a trace with exactly one root span
    And the root span's status is not ERROR
    And the spans name the service they come from

  @id:a-failed-run-marks-its-root-span-as-an-error
  Scenario Outline: A failed run marks its root span as an error
    Given the upstream serves 25 rows
    And the upstream's next answer is <answer>
    When the pipeline runs
    Then it exits with the code declared for <outcome>
    And the run exported a trace with exactly one root span
    And the root span's status is ERROR
    And the spans name the service they come from

    Examples:
      | answer                 | outcome              |
      | an empty array         | "invalid_upstream"   |
      | JSON cut in the middle | "invalid_upstream"   |
      | status 503             | "upstream_transient" |
      | status 404             | "upstream_refused"   |
