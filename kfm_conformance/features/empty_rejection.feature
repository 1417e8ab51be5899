@empty-rejection
Feature: Empty upstream data is rejected
  The blueprint's seed "rejects empty upstream responses". An empty answer is never published:
  the pipeline exits with its declared code for invalid upstream data, the published output and
  the run-state stay byte-identical, and the rejected answer is not remembered as a version.

  @id:an-empty-answer-is-rejected-and-nothing-changes
  Scenario Outline: An empty answer is rejected and nothing changes
    Given the upstream serves 25 rows
    And the pipeline has published once
    When the upstream moves to a new version holding <empty>
    And the pipeline runs again
    Then it exits with the code declared for "invalid_upstream"
    And the output and the run-state are byte-identical to before
    And nothing temporary is left beside the output
    When the upstream goes back to the published version
    And the pipeline runs again
    Then it sends only validators of the version it has published

    Examples:
      | empty                        |
      | an empty array               |
      | an empty body                |
      | null                         |
      | an array of one empty object |

  @id:an-empty-answer-on-the-very-first-run-publishes-nothing
  Scenario Outline: An empty answer on the very first run publishes nothing
    Given the upstream serves <empty>
    When the pipeline runs
    Then it exits with the code declared for "invalid_upstream"
    And nothing is published

    Examples:
      | empty                        |
      | an empty array               |
      | an empty body                |
      | null                         |
      | an array of one empty object |
