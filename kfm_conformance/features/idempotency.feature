@idempotency
Feature: Idempotent run-state
  The blueprint requires "idempotent run-state enforcement". Running the pipeline again against
  an unchanged upstream changes nothing; the run-state never disagrees with the published output
  (the validators the pipeline sends always belong to the data it has published); and the same
  payload delivered again never duplicates rows.

  @id:reruns-against-an-unchanged-upstream-leave-the-output-byte-identical
  Scenario: Reruns against an unchanged upstream leave the output byte-identical
    Given the upstream serves 40 rows
    And the pipeline has published once
    When the pipeline runs 3 more times
    Then every run exits with a success code
    And the output's bytes are unchanged

  @id:identical-payloads-delivered-again-never-duplicate-rows
  Scenario: Identical payloads delivered again never duplicate rows
    Given the upstream serves 40 rows and ignores conditional requests
    And the pipeline has published once
    When the pipeline runs 3 more times
    Then every run exits with a success code
    And the output holds the upstream's rows in the upstream's order
    And the output's bytes are unchanged

  @id:the-run-state-follows-the-published-output-from-version-to-version
  Scenario: The run-state follows the published output from version to version
    Given the upstream serves 40 rows
    And the pipeline has published once
    When the upstream moves to a new version of 45 rows
    And the pipeline runs again
    Then it exits with the code declared for "published"
    And the output holds the upstream's rows in the upstream's order
    When the pipeline runs again
    Then it sends only validators of the version it has published
    And the upstream answered 304

  @id:killed-at-any-file-system-step-of-an-update-the-pipeline-never-keeps-a-run-state-for-data-it-did-not-publish
  Scenario: Killed at any file-system step of an update, the pipeline never keeps a run-state for data it did not publish
    Given the system-call tracer is available
    When the pipeline is killed at each file-system step of an update from 2000 rows to 2500 rows, one run per step
    Then after every kill the next run sends only validators of the version whose data survived
    And after every kill the next normal run publishes the new version
