@promotion
Feature: Branch-based promotion in lakeFS
  The blueprint promises "branch-based promotion (lakeFS + Airflow)" and a "lakeFS-safe
  promotion flow". A pipeline whose profile declares a [lakefs] table publishes into a lakeFS
  repository: it writes on a branch of its own, commits, validates what it wrote, and merges
  into the target branch in one atomic step. Readers of the target branch never see a partial
  or invalid publication.

  For every scenario the harness creates a fresh lakeFS repository with a main branch and gives
  the pipeline its endpoint, credentials, repository and target branch through the
  environment variables the profile names. It judges only from the outside, through the lakeFS
  API: main's head commit, the commits on main, the objects main shows (uncommitted ones
  included, as every reader of the branch sees them) and the branches.

  A publishing run puts exactly one new commit on main: the merge of its run branch. Every
  commit on main holds a complete, valid output (the rows of a version the upstream served). A
  run that fails, is rejected or is killed before its merge leaves main's head commit, its
  objects and its staging area as they were (its own branch may be cleaned up or abandoned).
  Reverting the last promotion restores main's previous content exactly. Reruns against an
  unchanged upstream put no new commit on main.

  A profile without [lakefs] promises no promotion: these scenarios are skipped as "not
  declared". With [lakefs] but no lakeFS in the chosen services (--services), they are skipped
  as unavailable, which blocks certification.

  @id:a-publishing-run-promotes-its-output-through-one-merge-of-a-run-branch
  Scenario: A publishing run promotes its output through one merge of a run branch
    Given the profile declares a lakeFS promotion target
    And the upstream serves 40 rows
    When the pipeline runs while a reader watches main
    Then it exits with the code declared for "published"
    And main holds the published version through exactly one merge of a run branch
    And the reader of main only ever saw complete, valid versions

  @id:every-commit-on-main-holds-a-complete-valid-output
  Scenario: Every commit on main holds a complete, valid output
    Given the profile declares a lakeFS promotion target
    And the upstream serves 40 rows
    And the pipeline has published once
    When the upstream moves to a new version of 45 rows
    And the pipeline runs again while a reader watches main
    Then it exits with the code declared for "published"
    And the reader of main only ever saw complete, valid versions
    And every commit on main holds a complete, valid output

  @id:a-rejected-or-failed-run-leaves-main-as-it-was
  Scenario Outline: A rejected or failed run leaves main as it was
    Given the profile declares a lakeFS promotion target
    And the upstream serves 40 rows
    And the pipeline has published once
    And the upstream's next answer is <answer>
    When the pipeline runs again while a reader watches main
    Then it exits with the code declared for <outcome>
    And main's head commit, objects and staging area are unchanged
    And the reader of main only ever saw complete, valid versions

    Examples:
      | answer                 | outcome              |
      | an empty array         | "invalid_upstream"   |
      | JSON cut in the middle | "invalid_upstream"   |
      | status 503             | "upstream_transient" |

  @id:a-run-killed-in-the-middle-of-its-promotion-leaves-main-as-it-was
  Scenario: A run killed in the middle of its promotion leaves main as it was
    Given the profile declares a lakeFS promotion target
    And the upstream serves 40 rows
    And the pipeline has published once
    When the upstream moves to a new version of 45 rows
    And the pipeline is killed at a seeded moment of its promotion
    Then main's head commit, objects and staging area are unchanged
    When the pipeline runs again
    Then it exits with a success code
    And main holds the published version through exactly one merge of a run branch

  @id:reverting-the-last-promotion-restores-main-s-previous-content-exactly
  Scenario: Reverting the last promotion restores main's previous content exactly
    Given the profile declares a lakeFS promotion target
    And the upstream serves 40 rows
    And the pipeline has published once
    When the upstream moves to a new version of 45 rows
    And the pipeline runs again
    Then it exits with the code declared for "published"
    When the last promotion is reverted on main
    Then main holds exactly what it held before the last publication

  @id:reruns-against-an-unchanged-upstream-put-no-new-commit-on-main
  Scenario: Reruns against an unchanged upstream put no new commit on main
    Given the profile declares a lakeFS promotion target
    And the upstream serves 40 rows and ignores conditional requests
    And the pipeline has published once
    When the pipeline runs 2 more times
    Then every run exits with a success code
    And the reruns put no new commit on main
