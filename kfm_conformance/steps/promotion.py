"""Step definitions for the promotion guarantee; the judging is in
:mod:`kfm_conformance.promotion`.

The scenario's lakeFS target, the observer of main and the crash record live in a
:class:`PromotionWorld`, one per scenario (the ``kfm_promotion`` fixture), whose teardown
deletes the scenario's repository.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pytest_bdd import given, then, when

from kfm_conformance import promotion
from kfm_conformance.promotion import MainWatcher, PromotionObserver, PromotionTarget
from kfm_conformance.scenario import ScenarioContext
from kfm_conformance.services.runtime import ServiceSession
from kfm_conformance.services.scenario import ServiceObserver
from kfm_conformance.verdict import HarnessError


@dataclass
class PromotionWorld:
    target: PromotionTarget | None = None
    observer: PromotionObserver | None = None
    crash: dict[str, Any] | None = None
    watchers: list[MainWatcher] = field(default_factory=list)

    def ready(self) -> tuple[PromotionTarget, PromotionObserver]:
        if self.target is None or self.observer is None:
            raise HarnessError("the scenario has no lakeFS target: its Given step is missing")
        return self.target, self.observer


@pytest.fixture
def kfm_promotion() -> Generator[PromotionWorld, None, None]:
    world = PromotionWorld()
    yield world
    if world.target is not None:
        world.target.close()


# -- Given ------------------------------------------------------------------------------------
@given("the profile declares a lakeFS promotion target")
def declares_target(
    kfm: ScenarioContext,
    kfm_promotion: PromotionWorld,
    kfm_services: ServiceSession | None,
    kfm_service_observer: ServiceObserver,
) -> None:
    target = promotion.require_target(kfm, kfm_services, kfm_service_observer)
    kfm_promotion.target = target
    kfm_promotion.observer = PromotionObserver(target)
    kfm.run_observers.append(kfm_promotion.observer)


# -- When -------------------------------------------------------------------------------------
@when("the pipeline runs while a reader watches main")
@when("the pipeline runs again while a reader watches main")
def runs_watched(kfm: ScenarioContext, kfm_promotion: PromotionWorld) -> None:
    target, _ = kfm_promotion.ready()
    with MainWatcher(kfm, target) as watcher:
        kfm_promotion.watchers.append(watcher)
        kfm.run()


@when("the pipeline is killed at a seeded moment of its promotion")
def killed_mid_promotion(kfm: ScenarioContext, kfm_promotion: PromotionWorld) -> None:
    target, observer = kfm_promotion.ready()
    kfm_promotion.crash = promotion.run_killed_at_seeded_write(kfm, target, observer)


@when("the last promotion is reverted on main")
def revert_last(kfm: ScenarioContext, kfm_promotion: PromotionWorld) -> None:
    target, _ = kfm_promotion.ready()
    promotion.revert_last_promotion(kfm, target)


# -- Then -------------------------------------------------------------------------------------
@then("main holds the published version through exactly one merge of a run branch")
def promoted(kfm: ScenarioContext, kfm_promotion: PromotionWorld) -> None:
    target, observer = kfm_promotion.ready()
    promotion.judge_promoted(kfm, target, observer.last)


@then("the reader of main only ever saw complete, valid versions")
def reader_saw_whole_versions(kfm: ScenarioContext, kfm_promotion: PromotionWorld) -> None:
    if not kfm_promotion.watchers:
        raise HarnessError("no reader watched main in this scenario")
    promotion.judge_reader(kfm, kfm_promotion.watchers[-1])


@then("every commit on main holds a complete, valid output")
def history_valid(kfm: ScenarioContext, kfm_promotion: PromotionWorld) -> None:
    target, observer = kfm_promotion.ready()
    promotion.judge_history(kfm, target, observer.runs[0].before.head)


@then("main's head commit, objects and staging area are unchanged")
def main_unchanged(kfm: ScenarioContext, kfm_promotion: PromotionWorld) -> None:
    target, observer = kfm_promotion.ready()
    if kfm_promotion.crash is not None:
        promotion.judge_crash(kfm, target, observer.last, kfm_promotion.crash)
    else:
        promotion.judge_main_unchanged(kfm, observer.last)


@then("main holds exactly what it held before the last publication")
def revert_restores(kfm: ScenarioContext, kfm_promotion: PromotionWorld) -> None:
    target, observer = kfm_promotion.ready()
    last = observer.last_publication()
    if last is None:
        raise HarnessError("no run of this scenario changed main, so nothing was reverted")
    promotion.judge_revert_restores(kfm, target, last.before)


@then("the reruns put no new commit on main")
def reruns_no_commit(kfm: ScenarioContext, kfm_promotion: PromotionWorld) -> None:
    _, observer = kfm_promotion.ready()
    first = observer.runs[0].after if observer.runs else None
    if first is None:
        raise HarnessError("the scenario has no publishing run to compare with")
    promotion.judge_no_new_commit(kfm, observer, first.head)
