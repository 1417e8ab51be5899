@exit-codes
Feature: Deterministic exit codes
  The blueprint's seed promises "deterministic exit codes". Every outcome exits with the code the
  profile declares (the blueprint's table by default), the same scenario always gives the same
  code, and no failure ever exits with a success code. Server errors, rate limiting and
  timeouts are transient: the scheduler may retry them.

  @id:each-upstream-answer-maps-to-its-declared-exit-code
  Scenario Outline: Each upstream answer maps to its declared exit code
    Given the upstream serves 25 rows
    And the upstream's next answer is <answer>
    When the pipeline runs
    Then it exits with the code declared for <outcome>

    Examples:
      | answer                             | outcome                                   |
      | status 500                         | "upstream_transient"                      |
      | status 502                         | "upstream_transient"                      |
      | status 503                         | "upstream_transient"                      |
      | status 429 with Retry-After 1      | "upstream_transient" or "published"       |
      | status 404                         | "upstream_refused"                        |
      | status 403                         | "upstream_refused"                        |
      | status 410                         | "upstream_refused"                        |
      | a connection reset                 | "upstream_transient" or "invalid_upstream" |
      | an empty array                     | "invalid_upstream"                        |
      | a redirect to the data             | "published"                               |

  @id:an-upstream-that-refuses-connections-is-transient
  Scenario: An upstream that refuses connections is transient
    When the pipeline runs against an upstream that refuses connections
    Then it exits with the code declared for "upstream_transient"
    And nothing is published

  @id:the-same-scenario-repeated-gives-the-same-code-every-time
  Scenario Outline: The same scenario repeated gives the same code every time
    Given the upstream serves 25 rows
    When the pipeline runs 3 times in fresh working directories against <answer>
    Then every run exits with the same code
    And that code is the one declared for <outcome>

    Examples:
      | answer       | outcome              |
      | status 503   | "upstream_transient" |
      | status 404   | "upstream_refused"   |
      | an empty array | "invalid_upstream" |
      | 25 rows      | "published"          |

  @id:without-an-upstream-url-the-pipeline-exits-with-its-usage-code
  Scenario: Without an upstream URL the pipeline exits with its usage code
    When the pipeline runs without an upstream URL
    Then it exits with the code declared for "usage"

  @id:a-slow-upstream-beyond-the-declared-fetch-bound-is-transient
  Scenario Outline: A slow upstream beyond the declared fetch bound is transient
    Given the profile declares a fetch time bound
    And the upstream's next answer is <slowness> lasting twice the bound
    When the pipeline runs
    Then it exits with the code declared for "upstream_transient"
    And nothing is published

    Examples:
      | slowness              |
      | headers sent late     |
      | a trickling body      |

  @id:nothing-of-a-run-goes-on-after-it-exits
  Scenario: Nothing of a run goes on after it exits
    Given the upstream serves 25 rows
    And the pipeline has published once
    And the upstream's next answer is JSON cut in the middle
    When the pipeline runs again
    Then it exits with a failure code
    And no process of any run was still alive after that run exited
