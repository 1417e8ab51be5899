"""A scenario's crash campaign: scripted from the step's words, run once, shared by every
scenario that judges it.

A feature file names the publication a campaign kills ("a first publication of 2000 rows",
"an update from 2000 rows to 2500 rows"). :func:`campaign_for` serves those versions from the
scenario's origin, and runs the campaign of :mod:`kfm_conformance.faults.crash`, or takes the
result another scenario computed for the same pipeline, publication and seed
(:mod:`kfm_conformance.faults.campaign_cache`: atomic-publication and idempotency judge one
campaign by their own oracles). Its runs are the scenario's evidence either way.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from kfm_conformance.faults.campaign_cache import campaign_key, shared_campaign
from kfm_conformance.faults.crash import (
    FIRST_PUBLICATION,
    UPDATE,
    CampaignResult,
    run_campaign,
    run_from_json,
)
from kfm_conformance.upstream import Resource

if TYPE_CHECKING:
    from kfm_conformance.scenario import ScenarioContext

#: Parallel lanes of the crash campaign (the blueprint's reference machine has 2 cores).
CAMPAIGN_WORKERS = 2
#: Time-based kills added to each strace crash campaign.
CAMPAIGN_TIMED_KILLS = 2

_FIRST = re.compile(r"a first publication of (\d+) rows")
_UPDATE = re.compile(r"an update from (\d+) rows to (\d+) rows")


def campaign_for(kfm: ScenarioContext, publication: str, owner: str) -> CampaignResult:
    """Serve the publication the words describe, and run (or reuse) its crash campaign; its
    runs and a summary go into the scenario's evidence."""
    first, update = _FIRST.fullmatch(publication), _UPDATE.fullmatch(publication)
    if update:
        old = kfm.upstream.serve_rows(int(update.group(1))).resource
        new = kfm.upstream.serve_rows(int(update.group(2))).resource
        case = UPDATE
    elif first:
        old, new = None, kfm.upstream.serve_rows(int(first.group(1))).resource
        case = FIRST_PUBLICATION
    else:
        raise ValueError(f"unknown publication {publication!r}")
    key = campaign_key(
        profile=str(kfm.profile.path),
        profile_sha256=kfm.profile.digest,
        case=case,
        old=fingerprint(old) if old else None,
        new=fingerprint(new),
        seed=kfm.seed,
        workers=CAMPAIGN_WORKERS,
        timed_kills=CAMPAIGN_TIMED_KILLS,
    )
    shared = shared_campaign(
        key,
        owner,
        lambda: run_campaign(
            kfm.profile,
            kfm.make_sandbox,
            case=case,
            old=old,
            new=new,
            extra_env=kfm.extra_env,
            workers=CAMPAIGN_WORKERS,
            timed_kills=CAMPAIGN_TIMED_KILLS,
            seed=kfm.seed,
        ),
    )
    result = shared.result
    evidence = result.to_evidence()
    if shared.reused_from is None:
        kfm.other_sandboxes.extend(result.keep)
    else:
        evidence["reused_from"] = shared.reused_from
        evidence["note"] = (
            "this campaign ran once for every scenario that judges it; its runs are shown here "
            "as the scenario that ran it recorded them"
        )
        holder = kfm.fresh_sandbox()
        for run in result.to_json()["runs"]:
            holder.record(run_from_json(run))
    kfm.evidence["crash_campaign"] = evidence
    return result


def fingerprint(resource: Resource) -> dict[str, str | None]:
    """What identifies a served version for the campaign cache."""
    return {
        "body_sha256": hashlib.sha256(resource.body).hexdigest(),
        "last_modified": resource.last_modified,
        "etag": resource.etag,
    }
