@deterministic-output
Feature: Deterministic output
  The blueprint requires "deterministic transform ordering" and deterministic ETL. The same
  payload gives a byte-identical output, whichever working directory it runs in and however
  often it runs, with the rows in the upstream's order.

  @id:the-same-payload-gives-byte-identical-output-in-two-working-directories
  Scenario: The same payload gives byte-identical output in two working directories
    Given the upstream serves 200 rows
    When the pipeline publishes it in two fresh working directories
    Then both outputs are byte-identical

  @id:rows-keep-the-upstream-s-order
  Scenario: Rows keep the upstream's order
    Given the upstream serves 200 rows in a scrambled order
    When the pipeline runs
    Then it exits with the code declared for "published"
    And the output holds the upstream's rows in the upstream's order

  @id:a-gzip-encoded-payload-gives-the-same-output-as-the-plain-one
  Scenario: A gzip-encoded payload gives the same output as the plain one
    Given the upstream serves 200 rows
    When the pipeline publishes it in two fresh working directories, the second time gzip-encoded
    Then both outputs are byte-identical

  @id:republishing-after-the-output-was-deleted-gives-the-same-bytes
  Scenario: Republishing after the output was deleted gives the same bytes
    Given the upstream serves 200 rows
    And the pipeline has published once
    When the published output is deleted
    And the pipeline runs again
    Then the output's bytes are unchanged
