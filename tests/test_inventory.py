"""Check IDs are declared in the feature files (``@id:`` tags), unique, and survive a reworded
title."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfm_conformance import guarantees
from kfm_conformance.features import (
    declared_check_ids,
    declared_scenarios,
    feature_files,
    inventory_problems,
    select,
)


def test_every_packaged_scenario_declares_a_unique_id() -> None:
    assert feature_files()
    assert inventory_problems() == []
    assert all(s.check_slug for s in declared_scenarios())


def test_missing_and_duplicate_ids_are_problems(tmp_path: Path) -> None:
    feature = tmp_path / "x.feature"
    feature.write_text(
        "@change-detection\n"
        "Feature: x\n"
        "  @id:first\n"
        "  Scenario: One\n"
        "    Given a step\n"
        "  Scenario: Two without an id\n"
        "    Given a step\n"
        "  @id:first @recommended\n"
        "  Scenario Outline: Three\n"
        "    Given a <thing>\n"
        "    Examples:\n"
        "      | thing |\n"
        "      | a     |\n"
        "  @id:Not_A_Slug\n"
        "  Scenario: Four\n"
        "    Given a step\n"
    )
    problems = inventory_problems([feature])
    assert any("'Two without an id' declares no @id" in p for p in problems)
    assert any("@id:first is declared already at line 4" in p for p in problems)
    assert any("@id:Not_A_Slug is not a lower-case slug" in p for p in problems)
    assert len(problems) == 3


def test_rewording_a_title_keeps_its_id(tmp_path: Path) -> None:
    before = tmp_path / "a.feature"
    after = tmp_path / "b.feature"
    text = "Feature: x\n  @id:stable-check\n  Scenario: {title}\n    Given a step\n"
    before.write_text(text.format(title="The old wording"))
    after.write_text(text.format(title="A completely new wording"))
    (old,) = declared_scenarios([before])
    (new,) = declared_scenarios([after])
    assert old.name != new.name
    assert old.check_slug == new.check_slug == "stable-check"


def test_only_selects_guarantees_and_single_scenarios_by_check_id() -> None:
    ids = declared_check_ids()
    assert len(ids) == len(declared_scenarios())
    assert {i.split("/", 1)[0] for i in ids} == set(guarantees.IDS)
    assert select(None).guarantees == list(guarantees.IDS) and select([]).checks == {}
    one = "atomic-publication/nothing-temporary-is-left-beside-the-output-after-a-publication"
    assert one in ids
    chosen = select(["lineage", one])
    assert chosen.guarantees == ["atomic-publication", "lineage"]  # catalogue order
    assert chosen.check_ids == [one]
    assert chosen.keeps("atomic-publication", one)
    assert not chosen.keeps("atomic-publication", "atomic-publication/other")
    assert chosen.keeps("lineage", "lineage/anything[example]")
    assert not chosen.keeps("exit-codes", "exit-codes/anything")
    # An outline's examples come with its ID; a whole guarantee wins over one of its checks.
    assert select([one]).keeps("atomic-publication", one + "[a-b]")
    assert select([one, "atomic-publication"]).checks == {}
    with pytest.raises(ValueError, match="unknown check ID 'lineage/no-such-scenario'"):
        select(["lineage/no-such-scenario"])
    with pytest.raises(ValueError, match="unknown guarantee 'lineages'"):
        select(["lineages"])
