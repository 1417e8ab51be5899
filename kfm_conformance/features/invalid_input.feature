@invalid-input
Feature: Malformed upstream data is rejected
  Data that is not a complete JSON array of objects is never published, not even in part.
  The pipeline exits with its declared code, the published output and run-state stay
  byte-identical, and nothing partial is left at the output path. An answer that was cut off
  on the wire may be reported either as invalid data or as a transient failure.

  @id:a-malformed-answer-is-rejected-and-nothing-changes
  Scenario Outline: A malformed answer is rejected and nothing changes
    Given the upstream serves 25 rows
    And the pipeline has published once
    And the upstream's next answer is <defect>
    When the pipeline runs again
    Then it exits with the code declared for <outcome>
    And the output and the run-state are byte-identical to before
    And nothing temporary is left beside the output

    Examples:
      | defect                                | outcome                                   |
      | an HTML page with status 200          | "invalid_upstream"                        |
      | a JSON object instead of an array     | "invalid_upstream"                        |
      | an array of numbers                   | "invalid_upstream"                        |
      | JSON cut in the middle                | "invalid_upstream"                        |
      | invalid UTF-8 bytes                   | "invalid_upstream"                        |
      | corrupt gzip                          | "invalid_upstream"                        |
      | a body shorter than its Content-Length | "invalid_upstream" or "upstream_transient" |
      | a chunked body cut before its end     | "invalid_upstream" or "upstream_transient" |
      | a redirect loop                       | "invalid_upstream"                        |

  @id:malformed-data-on-the-very-first-run-publishes-nothing
  Scenario Outline: Malformed data on the very first run publishes nothing
    Given the upstream's next answer is <defect>
    When the pipeline runs
    Then it exits with a failure code
    And nothing is published

    Examples:
      | defect                                 |
      | a JSON object instead of an array      |
      | JSON cut in the middle                 |
      | a body shorter than its Content-Length |
      | invalid UTF-8 bytes                    |

  @id:a-payload-over-the-declared-size-cap-is-rejected
  Scenario: A payload over the declared size cap is rejected
    Given the profile declares a size cap
    And the pipeline has published a small version once
    And the upstream's next answer is a valid payload larger than the cap
    When the pipeline runs again
    Then it exits with the code declared for "invalid_upstream"
    And the output and the run-state are byte-identical to before
