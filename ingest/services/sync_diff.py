"""What a catalog sync changes: Waldur's answers compared with what the catalog holds (no I/O).

Incremental (``full=False``): only additions and updates of what Waldur returned. Full: also
the removal of what Waldur no longer has, within the WALDUR_OFFERINGS scope (an empty scope:
everything). A plan period missing from Waldur's listing is removed only when it has not
ended: the listing leaves out periods that ended before the current month, which a late
report for that month may still need.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from ingest.services.sync_ports import (
    CatalogView,
    ChangeSet,
    RemoteOffering,
    RemotePlanPeriod,
    RemoteProvider,
    RemoteResource,
    SecretRead,
)

KINDS = ("service_providers", "offerings", "resources", "plan_periods")


@dataclasses.dataclass
class Diff:
    changes: ChangeSet
    summary: dict[str, Any]
    fetch_plan_periods: list[UUID]  # resources whose plan periods must be read
    vanished_resources: list[UUID]  # full runs: held, in scope, not listed by Waldur


def _counts() -> dict[str, dict[str, int]]:
    return {k: {"added": 0, "updated": 0, "removed": 0} for k in KINDS}


def compare(
    view: CatalogView,
    providers: Sequence[RemoteProvider],
    secrets: dict[UUID, SecretRead],
    offerings: Sequence[RemoteOffering],
    resources: Sequence[RemoteResource],
    *,
    full: bool,
    scope: Iterable[UUID] = (),
    secret_min_length: int = 0,
    now: dt.datetime,
    all_providers: Iterable[UUID] | None = None,
) -> Diff:
    """``all_providers``: every provider Waldur listed (before the scope kept only the owners
    of scoped offerings); a full run removes a held provider only when it is not among them."""
    in_scope = set(scope)

    def scoped(offering: UUID) -> bool:
        return not in_scope or offering in in_scope

    counts = _counts()
    ch = ChangeSet()
    skipped = {"offerings": 0, "resources": 0}

    remote_p = {p.customer: p for p in providers}
    listed = set(remote_p) | set(all_providers or ())
    for p in providers:
        held_p = view.providers.get(p.customer)
        if held_p is None:
            ch.providers.append(p)
            counts["service_providers"]["added"] += 1
        elif held_p.name != p.name:
            ch.providers.append(p)
            counts["service_providers"]["updated"] += 1

    secret_counts = {"set": 0, "rotated": 0}
    unreadable: list[dict[str, Any]] = []
    for p in providers:
        found = secrets.get(p.customer)
        problem = None
        if found is None or found.problem:
            problem = found.problem if found else "not read"
        elif not found.secret:
            problem = "Waldur has no secret for it"
        elif len(found.secret) < secret_min_length:
            problem = f"shorter than SECRET_MIN_LENGTH={secret_min_length}"
        if problem is not None or found is None or not found.secret:
            unreadable.append(
                {
                    "customer": str(p.customer),
                    "service_provider": str(p.service_provider) if p.service_provider else None,
                    "name": p.name,
                    "reason": problem,
                }
            )
            continue
        held_p = view.providers.get(p.customer)
        current = held_p.secret if held_p else None
        if current == found.secret:
            continue
        ch.secrets.append((p.customer, found.secret, current is not None))
        secret_counts["rotated" if current is not None else "set"] += 1

    removed_providers: set[UUID] = set()
    if full:
        held_by_owner: dict[UUID, list[UUID]] = defaultdict(list)
        for u, owned in view.offerings.items():
            held_by_owner[owned.customer].append(u)
        for customer in view.providers:
            if customer in listed:
                continue
            if all(scoped(u) for u in held_by_owner[customer]):
                removed_providers.add(customer)
        ch.remove_providers = sorted(removed_providers)
        counts["service_providers"]["removed"] = len(removed_providers)

    known_providers = (set(view.providers) - removed_providers) | set(remote_p)
    remote_o: dict[UUID, RemoteOffering] = {}
    for o in offerings:
        if not scoped(o.uuid) or o.customer not in known_providers:
            skipped["offerings"] += 1
            continue
        remote_o[o.uuid] = o
        held_o = view.offerings.get(o.uuid)
        components = {c.type: (c.billing_type, c.measured_unit) for c in o.components}
        if held_o is None:
            ch.offerings.append(o)
            counts["offerings"]["added"] += 1
        elif (held_o.customer, held_o.name, held_o.components) != (o.customer, o.name, components):
            ch.offerings.append(o)
            counts["offerings"]["updated"] += 1

    removed_offerings: set[UUID] = set()
    if full:
        for u, gone in view.offerings.items():
            if u in remote_o:
                continue
            if gone.customer in removed_providers or scoped(u):
                removed_offerings.add(u)
        ch.remove_offerings = sorted(removed_offerings)
        counts["offerings"]["removed"] = len(removed_offerings)

    known_offerings = (set(view.offerings) - removed_offerings) | set(remote_o)
    remote_r: dict[UUID, RemoteResource] = {}
    changed: list[UUID] = []
    for r in resources:
        if not scoped(r.offering) or r.offering not in known_offerings:
            skipped["resources"] += 1
            continue
        remote_r[r.uuid] = r
        held_r = view.resources.get(r.uuid)
        if held_r is None:
            ch.resources.append(r)
            changed.append(r.uuid)
            counts["resources"]["added"] += 1
        elif (held_r.offering, held_r.name, held_r.state, held_r.plan) != (
            r.offering,
            r.name,
            r.state,
            r.plan,
        ):
            ch.resources.append(r)
            changed.append(r.uuid)
            counts["resources"]["updated"] += 1

    vanished: list[UUID] = []
    removed_resources: set[UUID] = set()
    if full:
        for u, held_r in view.resources.items():
            if u in remote_r:
                continue
            if held_r.offering in removed_offerings:
                removed_resources.add(u)
            elif scoped(held_r.offering):
                vanished.append(u)
                removed_resources.add(u)
        ch.remove_resources = sorted(removed_resources)
        counts["resources"]["removed"] = len(removed_resources)
        for pp in view.plan_periods.values():
            if pp.resource in removed_resources:
                counts["plan_periods"]["removed"] += 1  # they go with their resource

    summary: dict[str, Any] = {
        "changes": counts,
        "secrets": {**secret_counts, "unreadable": unreadable},
        "skipped": skipped,
        "seen": {
            "service_providers": len(providers),
            "offerings": len(remote_o),
            "resources": len(remote_r),
            "plan_period_requests": 0,
        },
    }
    fetch = list(remote_r) if full else changed
    return Diff(ch, summary, fetch, vanished)


def add_plan_periods(
    diff: Diff,
    view: CatalogView,
    fetched: dict[UUID, list[RemotePlanPeriod] | None],
    *,
    now: dt.datetime,
) -> None:
    """Fold the plan periods read for ``diff.fetch_plan_periods`` into the diff."""
    held_by_resource: dict[UUID, list[RemotePlanPeriod]] = defaultdict(list)
    for pp in view.plan_periods.values():
        held_by_resource[pp.resource].append(pp)
    counts = diff.summary["changes"]["plan_periods"]
    diff.summary["seen"]["plan_period_requests"] = len(fetched)
    for resource, periods in fetched.items():
        if periods is None:  # deleted in Waldur since it was listed: the next full run sees it
            continue
        seen = set()
        for pp in periods:
            seen.add(pp.uuid)
            held = view.plan_periods.get(pp.uuid)
            if held is None:
                diff.changes.plan_periods.append(pp)
                counts["added"] += 1
            elif held != pp:
                diff.changes.plan_periods.append(pp)
                counts["updated"] += 1
        for held in held_by_resource[resource]:
            if held.uuid not in seen and (held.end is None or held.end > now):
                diff.changes.remove_plan_periods.append(held.uuid)
                counts["removed"] += 1
