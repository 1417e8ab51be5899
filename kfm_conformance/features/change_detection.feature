@change-detection
Feature: Change detection with HTTP validators
  The blueprint's seed "enforces If-Modified-Since protocol correctness" and is "304-aware".
  A compliant pipeline keeps the validators the upstream gives it (Last-Modified, and the ETag
  when there is one), sends them back exactly as received, and does no work when nothing changed.
  When the published output has gone missing, it fetches everything again.

  @id:the-first-run-publishes-and-the-next-run-sends-last-modified-back-unchanged
  Scenario: The first run publishes and the next run sends Last-Modified back unchanged
    Given the upstream serves 25 rows last modified "Sat, 01 Jan 2000 00:00:00 GMT"
    When the pipeline runs
    Then it exits with the code declared for "published"
    And the output holds the upstream's rows in the upstream's order
    When the pipeline runs again
    Then the request carried If-Modified-Since "Sat, 01 Jan 2000 00:00:00 GMT" exactly

  @id:an-unchanged-upstream-answers-304-and-the-output-is-not-touched
  Scenario: An unchanged upstream answers 304 and the output is not touched
    Given the upstream serves 25 rows
    And the pipeline has published once
    When the pipeline runs again
    Then the upstream answered 304
    And it exits with the code declared for "not_modified"
    And the output's bytes and inode are unchanged

  @id:an-entity-tag-is-sent-back-as-if-none-match-weak-tags-included
  Scenario Outline: An entity tag is sent back as If-None-Match, weak tags included
    Given the upstream serves 25 rows with the entity tag <etag>
    And the pipeline has published once
    When the pipeline runs again
    Then the request carried If-None-Match <etag> exactly
    And the upstream answered 304
    And the output's bytes and inode are unchanged

    Examples:
      | etag          |
      | "v1-7f3a"     |
      | W/"v1-weak"   |

  @id:an-origin-that-ignores-if-modified-since-and-sends-the-same-content-again
  Scenario: An origin that ignores If-Modified-Since and sends the same content again
    Given the upstream serves 25 rows and ignores conditional requests
    And the pipeline has published once
    When the pipeline runs again
    Then it exits with a success code
    And the output's bytes are unchanged

  @id:without-last-modified-the-pipeline-publishes-and-sends-no-validator
  Scenario: Without Last-Modified the pipeline publishes and sends no validator
    Given the upstream serves 25 rows without any validator
    When the pipeline runs
    Then it exits with the code declared for "published"
    And the output holds the upstream's rows in the upstream's order
    When the pipeline runs again
    Then the request carried no If-Modified-Since header
    And the request carried no If-None-Match header

  @id:a-malformed-last-modified-is-handled-without-a-crash
  Scenario Outline: A malformed Last-Modified is handled without a crash
    Given the upstream serves 25 rows last modified <value>
    When the pipeline runs
    Then it exits with the code declared for "published"
    When the pipeline runs again
    Then it exits with a success code
    And any If-Modified-Since it sent is the stored value, byte for byte

    Examples:
      | value                        |
      | "yesterday, around noon"     |
      | "Mon, 32 Foo 2023 99:99:99"  |

  @id:a-304-that-carries-a-body-is-still-not-modified
  Scenario: A 304 that carries a body is still "not modified"
    Given the upstream serves 25 rows
    And the pipeline has published once
    And the upstream's next answer is a 304 with a body
    When the pipeline runs again
    Then it exits with the code declared for "not_modified"
    And the output's bytes and inode are unchanged

  @id:a-deleted-output-is-fetched-again-without-validators-and-republished
  Scenario: A deleted output is fetched again without validators and republished
    Given the upstream serves 25 rows
    And the pipeline has published once
    When the published output is deleted
    And the pipeline runs again
    Then the request carried no If-Modified-Since header
    And the request carried no If-None-Match header
    And it exits with the code declared for "published"
    And the output holds the upstream's rows in the upstream's order

  @id:a-new-upstream-version-is-published
  Scenario: A new upstream version is published
    Given the upstream serves 25 rows
    And the pipeline has published once
    When the upstream moves to a new version of 30 rows
    And the pipeline runs again
    Then it exits with the code declared for "published"
    And the output holds the upstream's rows in the upstream's order
