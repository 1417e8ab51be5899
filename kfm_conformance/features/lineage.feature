@lineage
Feature: Lineage through OpenLineage
  The blueprint records lineage with "OpenLineage (dataset dependencies + run facets)" and
  promises outputs "fully compatible with Marquez". On every run the harness points the
  pipeline at its own lineage endpoint the standard way (OPENLINEAGE_URL and
  OPENLINEAGE_NAMESPACE) and keeps every event the pipeline sends.

  A run reports itself as one OpenLineage run, or as a root run with task runs beneath it,
  each task run naming its parent run (Airflow's OpenLineage provider does this). Every
  OpenLineage run opens with one START event and closes with exactly one terminal event; the
  root run closes with COMPLETE when the run succeeded and FAIL when it failed, never COMPLETE
  when the pipeline exits with a failure code. The task runs agree with the root: when the run
  succeeded, the last run of every task completed; when it failed, not every task run completed.
  A root run with task
  runs beneath it may lack its START when its producer creates it already running (Airflow's
  dag.test()); that is accepted and said in the evidence. All events carry UUID run ids that tie
  them to the run or to its task runs, and within each of those runs their times never go
  backwards. The job keeps its namespace and name from run to run. The events name the upstream
  as the input (namespace scheme://host:port, name the path); a run that published names the
  output on a COMPLETE event, and should describe the output's columns as they are in the
  Parquet file. A rerun that found nothing new does not claim a new version of the output. Every
  event follows the OpenLineage specification: the model of the openlineage-python package by
  default, the official OpenLineage JSON Schema when the harness is given a copy of it.

  @id:a-publishing-run-names-its-upstream-and-its-output
  Scenario: A publishing run names its upstream and its output
    Given the upstream serves 40 rows
    When the pipeline runs
    Then it exits with the code declared for "published"
    And the run's lineage opens with START and closes with COMPLETE
    And every event of the run carries a UUID run id: the run's own or one of its task runs
    And the run's event times never go backwards
    And the run names the upstream as its input
    And a COMPLETE event of the run names the published output

  @id:a-publishing-run-states-the-columns-of-the-output-it-wrote
  Scenario: A publishing run states the columns of the output it wrote
    Given the upstream serves 40 rows
    When the pipeline runs
    Then it exits with the code declared for "published"
    And the output's schema facet matches the written Parquet schema

  @id:a-rerun-against-an-unchanged-upstream-claims-no-new-version-of-the-output
  Scenario: A rerun against an unchanged upstream claims no new version of the output
    Given the upstream serves 40 rows
    And the pipeline has published once
    When the pipeline runs again
    Then it exits with the code declared for "not_modified"
    And the run's lineage opens with START and closes with COMPLETE
    And every event of the run carries a UUID run id: the run's own or one of its task runs
    And the run names the upstream as its input
    And the run claims no new version of the output

  @id:a-failed-run-closes-its-lineage-with-fail-never-with-complete
  Scenario Outline: A failed run closes its lineage with FAIL, never with COMPLETE
    Given the upstream serves 25 rows
    And the upstream's next answer is <answer>
    When the pipeline runs
    Then it exits with the code declared for <outcome>
    And the run's lineage opens with START and closes with FAIL
    And every event of the run carries a UUID run id: the run's own or one of its task runs
    And the run's event times never go backwards
    And the run names the upstream as its input

    Examples:
      | answer                 | outcome              |
      | an empty array         | "invalid_upstream"   |
      | JSON cut in the middle | "invalid_upstream"   |
      | status 503             | "upstream_transient" |
      | status 404             | "upstream_refused"   |

  @id:the-job-keeps-its-namespace-and-name-from-run-to-run
  Scenario: The job keeps its namespace and name from run to run
    Given the upstream serves 40 rows
    And the pipeline has published once
    When the pipeline runs again
    And the upstream moves to a new version of 45 rows
    And the pipeline runs again
    And the pipeline runs again while the upstream answers status 503
    Then every run's lineage opens with START and closes with the terminal event its exit calls for
    And every run carries a run id of its own
    And every run names the same job

  @id:every-event-the-pipeline-sends-follows-the-openlineage-specification
  Scenario: Every event the pipeline sends follows the OpenLineage specification
    Given the upstream serves 40 rows
    And the pipeline has published once
    When the pipeline runs again
    And the pipeline runs again while the upstream answers status 503
    And the pipeline runs again while the upstream answers an empty array
    Then every event of every run follows the OpenLineage specification
