@provenance
Feature: Provenance sidecars (STAC, PROV-O, DCAT)
  The blueprint promises "full provenance: STAC + PROV-O + DCAT". A pipeline declares in its
  profile where it writes each sidecar. After every publication each declared sidecar must be
  well-formed for its standard and describe the data actually published: the STAC Item's asset
  and the DCAT distribution point at the output, and the PROV-O document says which run
  generated it from which upstream. A checksum of the output is recommended; a checksum that
  names another version is wrong. A run that publishes nothing leaves the sidecars untouched.

  @id:the-pipeline-declares-all-three-provenance-sidecars
  @recommended
  Scenario: The pipeline declares all three provenance sidecars
    Then the profile declares a STAC, a PROV-O and a DCAT sidecar

  @id:a-publication-writes-sidecars-that-describe-it
  Scenario: A publication writes sidecars that describe it
    Given the profile declares provenance sidecars
    And the upstream serves 25 rows
    When the pipeline runs
    Then it exits with the code declared for "published"
    And every declared sidecar describes the published output

  @id:a-new-version-gets-sidecars-that-describe-the-new-version
  Scenario: A new version gets sidecars that describe the new version
    Given the profile declares provenance sidecars
    And the upstream serves 25 rows
    And the pipeline has published once
    When the upstream moves to a new version of 30 rows
    And the pipeline runs again
    Then it exits with the code declared for "published"
    And every declared sidecar describes the published output

  @id:a-not-modified-run-leaves-the-sidecars-untouched
  Scenario: A not-modified run leaves the sidecars untouched
    Given the profile declares provenance sidecars
    And the upstream serves 25 rows
    And the pipeline has published once
    When the pipeline runs again
    Then it exits with a success code
    And the declared sidecars are byte-identical to before

  @id:a-run-that-publishes-nothing-leaves-the-sidecars-untouched
  Scenario Outline: A run that publishes nothing leaves the sidecars untouched
    Given the profile declares provenance sidecars
    And the upstream serves 25 rows
    And the pipeline has published once
    And the upstream's next answer is <answer>
    When the pipeline runs again
    Then it exits with a failure code
    And the declared sidecars are byte-identical to before

    Examples:
      | answer         |
      | an empty array |
      | status 503     |
