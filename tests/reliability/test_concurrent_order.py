"""Order independence under real concurrency.

Two Celery worker processes, fed one event per message by the real bridge, apply a shuffled stream
with duplicates; the CRM state must equal the state left by applying the same stream in occurred-at
order, one event at a time, in this process. The stream (fixed seed) covers two tenants, two
contactIds of one person (the same email: a merge), a contactId known only by the phone of another
(a phone match), an email change, consent statements before their contact exists, message and
engagement events before their contact (parked, then unparked), events without an eventId, and
republished copies of events as new BullMQ jobs.
"""

import random
from collections import Counter
from datetime import datetime, timedelta

import pytest
from django.core.management import call_command

from crm.models import ActivityType, Profile, Segment
from crm.services.engagement import engagement_scores_refresh
from crm.services.export import PROFILE_FIELDS
from crm.services.tenants import tenant_get_or_create
from messaging_events.models import InboundEvent
from messaging_events.services.parking import unpark_contacts
from tests.factories import (
    BASE_TIME,
    at,
    contact_created_job,
    contact_preference_updated_job,
    contact_updated_job,
    email_clicked_job,
    email_opened_job,
    message_bounced_job,
    message_delivered_job,
    message_sent_job,
    process,
    sms_replied_job,
)
from tests.processes import Processes, publish_jobs
from tests.reliability.stream import BEAT_ENV, settle

pytestmark = [pytest.mark.processes, pytest.mark.timeout(600)]

SEED = 20261129
TENANTS = ("t-conc-a", "t-conc-b")
SCORE_AT = BASE_TIME + timedelta(days=5)
# Their data names the arrival (old values, which event merged what): compared by count only.
ARRIVAL_DEPENDENT_ACTIVITIES = {ActivityType.PROFILE_UPDATED, ActivityType.PROFILE_MERGED}


def _contacts(tenant: str) -> dict[str, dict[str, str | None]]:
    """c0 and c3 are one person (same email); c2 has no email and c1's phone (a phone match)."""
    return {
        f"{tenant}-c0": {"email": f"ann@{tenant}.example", "phone": f"+2782{len(tenant)}110000"},
        f"{tenant}-c1": {"email": f"bob@{tenant}.example", "phone": "+27821110001"},
        f"{tenant}-c2": {"email": None, "phone": "+27821110001"},
        f"{tenant}-c3": {"email": f"Ann@{tenant}.example", "phone": None},
    }


def _stream(rng: random.Random) -> list[tuple[datetime, dict]]:
    """(occurred_at, job) pairs; every occurred-at is distinct, so occurred-at order is total."""
    minutes = iter(rng.sample(range(1, 5000), 400))
    numbers = iter(range(1, 10_000))
    events: list[tuple[datetime, dict]] = []

    def event_id() -> str | None:
        return None if rng.random() < 0.25 else f"co-{next(numbers)}"  # no eventId: identified by a hash

    def add(job_for) -> None:
        when = at(next(minutes))
        events.append((when, job_for(when)))

    for tenant in TENANTS:
        for contact_id, identity in _contacts(tenant).items():
            add(
                lambda when, c=contact_id, i=identity, t=tenant: contact_created_job(
                    contact_id=c,
                    tenant_id=t,
                    event_id=event_id(),
                    email=i["email"],
                    phone=i["phone"],
                    first_name=rng.choice(["Ann", "Bob", None]),
                    email_opt_in=rng.choice([True, False, None]),
                    sms_opt_in=rng.choice([True, False, None]),
                    timestamp=when,
                )
            )
            for _ in range(2):  # consent statements, some before the contact exists
                channel = rng.choice(["email_opt_in", "sms_opt_in", "whatsapp_opt_in"])
                value = rng.random() < 0.5
                add(
                    lambda when, c=contact_id, t=tenant, ch=channel, v=value: contact_preference_updated_job(
                        contact_id=c, tenant_id=t, event_id=event_id(), timestamp=when, **{ch: v}
                    )
                )
            add(
                lambda when, c=contact_id, t=tenant: contact_updated_job(
                    contact_id=c,
                    tenant_id=t,
                    event_id=event_id(),
                    email=f"new.{c}@example.org",  # an email change
                    first_name=rng.choice(["Annie", None]),
                    timestamp=when,
                )
            )
            message = f"{contact_id}-m"
            add(
                lambda when, c=contact_id, t=tenant, m=message: message_sent_job(
                    contact_id=c, message_id=m, campaign_id=f"camp-{t}", sent_at=when, tenant_id=t, event_id=event_id()
                )
            )
            add(
                lambda when, c=contact_id, t=tenant, m=message: message_delivered_job(
                    contact_id=c, message_id=m, delivered_at=when, tenant_id=t, event_id=event_id()
                )
            )
            add(
                lambda when, c=contact_id, t=tenant, m=message: email_opened_job(
                    contact_id=c, message_id=m, opened_at=when, tenant_id=t, event_id=event_id()
                )
            )
            add(
                lambda when, c=contact_id, t=tenant, m=message: email_clicked_job(
                    contact_id=c,
                    message_id=m,
                    link_url="https://example.com/a?utm_source=news",
                    clicked_at=when,
                    tenant_id=t,
                    event_id=event_id(),
                )
            )
            add(
                lambda when, c=contact_id, t=tenant, m=message: message_bounced_job(
                    contact_id=c,
                    message_id=m,
                    bounce_type=rng.choice(["hard", "soft"]),
                    bounced_at=when,
                    tenant_id=t,
                    event_id=event_id(),
                )
            )
            add(
                lambda when, c=contact_id, t=tenant: sms_replied_job(
                    contact_id=c,
                    reply_text=rng.choice(["Yes", "STOP"]),
                    replied_at=when,
                    tenant_id=t,
                    event_id=event_id(),
                )
            )
    return events


def _segments() -> None:
    for tenant in TENANTS:
        owner = tenant_get_or_create(tenant)
        Segment.objects.create(tenant=owner, name="email", required_consent_channel="email")
        Segment.objects.create(tenant=owner, name="engaged", min_engagement_score=10)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _plain(value: object) -> object:
    return _iso(value) if isinstance(value, datetime) else value


def _snapshot() -> dict:
    """Every CRM table, per profile keyed by its tenant and contactIds (ids and arrival-dependent
    fields left out), and every event's final inbox status by its identity."""
    engagement_scores_refresh(profile_ids=list(Profile.objects.values_list("pk", flat=True)), now=SCORE_AT)
    profiles = {}
    for profile in Profile.objects.select_related("tenant").prefetch_related(
        "contact_links",
        "consents",
        "consent_changes",
        "interactions",
        "attributions",
        "activities",
        "hard_bounces",
        "segments",
    ):
        key = (profile.tenant.external_id, *sorted(link.messaging_contact_id for link in profile.contact_links.all()))
        profiles[key] = {
            "fields": {name: _plain(getattr(profile, name)) for name in (*PROFILE_FIELDS, "is_stub")},
            "consent": sorted((c.channel, c.opted_in, _iso(c.changed_at), c.source) for c in profile.consents.all()),
            "ledger": sorted(
                (c.channel, c.opted_in, _iso(c.occurred_at), c.source, c.tiebreak)
                for c in profile.consent_changes.all()
            ),
            "interactions": sorted(
                (i.message_id, i.type, i.campaign_id, i.count, _iso(i.first_at), _iso(i.last_at))
                for i in profile.interactions.all()
            ),
            "attributions": sorted(
                (a.campaign_id, a.message_id, a.link_url, a.utm_source, _iso(a.occurred_at))
                for a in profile.attributions.all()
            ),
            "hard_bounces": sorted((b.message_id, _iso(b.occurred_at)) for b in profile.hard_bounces.all()),
            "segments": sorted(s.name for s in profile.segments.all()),
            "activities": sorted(
                Counter(
                    (a.type, _iso(a.occurred_at))
                    for a in profile.activities.all()
                    if a.type not in ARRIVAL_DEPENDENT_ACTIVITIES
                ).items()
            ),
        }
    inbox = dict(InboundEvent.objects.values_list("idempotency_key", "status"))
    return {"profiles": profiles, "inbox": inbox}


def test_two_workers_applying_a_shuffled_stream_with_duplicates_reach_the_in_order_state(
    processes: Processes,
) -> None:
    rng = random.Random(SEED)
    stream = _stream(rng)
    in_order = [job for _, job in sorted(stream, key=lambda pair: pair[0])]
    republished = rng.sample(in_order, len(in_order) // 5)  # new BullMQ jobs, same events
    # Contact events occur at their job's timestamp: the republished copies keep it, as a producer's would.
    arrival = [
        {"name": job["name"], "data": job["data"], "opts": {"timestamp": job["timestamp"]}}
        for job in [*in_order, *republished]
    ]
    rng.shuffle(arrival)

    _segments()
    processes.start_worker("worker-a", concurrency=1, wait=False)
    processes.start_worker("worker-b", concurrency=1, wait=False)
    processes.start_beat(env=BEAT_ENV, wait=False)
    processes.start_bridge(env={"BRIDGE_BATCH_SIZE": "1"}, wait=False)
    processes.wait_ready()
    publish_jobs(arrival)
    settle()
    concurrent = _snapshot()
    assert sum(InboundEvent.objects.values_list("deliveries", flat=True)) == len(arrival)
    both_worked = [p.output().count("event_applied") for p in processes.started if p.name.startswith("worker")]
    processes.kill_all()  # before the flush: nothing may write into the in-order run

    call_command("flush", interactive=False, verbosity=0)
    _segments()
    for job in in_order:
        process(job)
    unpark_contacts(sorted({c for tenant in TENANTS for c in _contacts(tenant)}))
    expected = _snapshot()

    assert min(both_worked) > 0, f"both workers applied events: {both_worked}"
    assert set(expected["inbox"].values()) <= {"applied", "ignored"}, Counter(expected["inbox"].values())
    assert concurrent["inbox"] == expected["inbox"], "every event ends with the same status"
    assert set(concurrent["profiles"]) == set(expected["profiles"]), "the same people, linked the same way"
    for key, state in expected["profiles"].items():
        for part, value in state.items():
            assert concurrent["profiles"][key][part] == value, (key, part)
