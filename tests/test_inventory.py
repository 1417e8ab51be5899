"""Check IDs are declared in the feature files (``@id:`` tags), unique, and survive a reworded
title."""

from __future__ import annotations

from pathlib import Path

from kfm_conformance.features import declared_scenarios, feature_files, inventory_problems


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
