@atomic-publication
Feature: Write-ahead temp file, then atomic replace
  The blueprint's seed does a "WAL write, then atomic replace", and promises "atomic publication
  and rollback". Whoever reads the output at any moment sees it absent, or an old complete
  version, or a new complete version: never a mix, never a truncated file. Nothing temporary
  is left at the output path.

  Scenario: A reader polling the output during publication sees only whole versions
    Given the upstream serves 8000 rows
    When a reader polls the output while the pipeline publishes it
    Then it exits with the code declared for "published"
    When the upstream moves to a new version of 10000 rows
    And a reader polls the output while the pipeline runs again
    Then it exits with the code declared for "published"
    And the output holds the upstream's rows in the upstream's order
    And the reader only ever saw no output or a complete published version

  Scenario: Nothing temporary is left beside the output after a publication
    Given the upstream serves 25 rows
    When the pipeline runs
    Then it exits with the code declared for "published"
    And nothing temporary is left beside the output

  Scenario: A rejected run leaves nothing beside the output
    Given the upstream serves 25 rows
    And the pipeline has published once
    And the upstream's next answer is JSON cut in the middle
    When the pipeline runs again
    Then it exits with a failure code
    And nothing temporary is left beside the output
