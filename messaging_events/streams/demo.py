"""The demo's stream: realistic, seeded, with every event type, for `publish_demo_events` and manual testing.

`demo_jobs(contacts=60, seed=7, tenants=3)` returns BullMQ job specs (`{"name", "data", "opts"}`) in
publishing order, in the two real shapes (`events.py`); some message events carry a top-level `tenantId`,
most do not (the contact link decides the tenant).

The stream holds duplicates (the same `eventId` twice, and message events without an `eventId` sent twice
with the same data), reorderings (a preference change or a bounce published before the `contact.created` /
`message.sent` it follows) and a few malformed jobs. The same seed gives the same jobs, so republishing it
changes nothing in the CRM: every copy finds its inbox row.
"""

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from messaging_events.contract.routing import EventType
from messaging_events.streams import events
from messaging_events.streams.events import OPT_IN_CHANNELS, StreamJob, iso

# Fixed so the same seed gives byte-identical jobs (and so the same identities) on any day.
DEMO_EPOCH = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)

FIRST_NAMES = ["Thandi", "Pieter", "Aisha", "Sipho", "Lerato", "Johan", "Naledi", "Ravi", "Zanele", "Mia", "Kabelo"]
LAST_NAMES = ["Nkosi", "van der Merwe", "Pillay", "Dlamini", "Botha", "Mokoena", "Naidoo", "Smith", "Khumalo"]
TEMPLATES = [("tpl_welcome", "Welcome"), ("tpl_news", "Monthly Newsletter"), ("tpl_offer", "Summer Offer")]

# Contact events carry no time of their own: the job timestamp is when they happened. `bulk_specs` sets it at
# publish time, a few seconds in the past, keeping the order these offsets (milliseconds) give.
OFFSET_KEY = "_timestamp_offset_ms"


@dataclass(frozen=True)
class DemoContact:
    tenant: str
    contact_id: str
    email: str
    phone: str
    first_name: str
    last_name: str


def demo_tenant_ids(tenants: int) -> list[str]:
    return [f"demo-tenant-{chr(ord('a') + i)}" for i in range(tenants)]


class _Stream:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.event_seq = 0

    def event_id(self) -> str:
        self.event_seq += 1
        return f"demo-evt-{self.event_seq:06d}"

    @staticmethod
    def contact_job(job: StreamJob, offset_ms: int) -> dict[str, Any]:
        return {**job, "opts": {}, OFFSET_KEY: offset_ms}

    @staticmethod
    def message_job(job: StreamJob) -> dict[str, Any]:
        return {**job, "opts": {}}


def _contacts(rng: random.Random, count: int, tenants: list[str]) -> list[DemoContact]:
    people = []
    for n in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        people.append(
            DemoContact(
                tenant=tenants[n % len(tenants)],
                contact_id=f"demo-contact-{n:05d}",
                email=f"{first.lower()}.{last.split()[-1].lower()}.{n}@example.com",
                phone=f"+2782{rng.randrange(1_000_000, 9_999_999)}",
                first_name=first,
                last_name=last,
            )
        )
    return people


def _malformed(tenant: str) -> list[dict[str, Any]]:
    """Jobs the contract must reject, each for a different reason: written out, since no builder makes them."""
    return [
        {"name": "contact.merged", "data": {"payload": {"eventId": "demo-bad-1", "tenantId": tenant}}, "opts": {}},
        {"name": "contact.created", "data": "not an object", "opts": {}},
        {"name": "contact.created", "data": {"eventId": "demo-bad-3", "tenantId": tenant}, "opts": {}},
        {
            "name": "contact.created",
            "data": {"payload": {"eventId": "demo-bad-4", "tenantId": tenant, "contactId": "bad-4", "email": "x@"}},
            "opts": {},
        },
        {
            "name": "message.sent",
            "data": {"type": "message.delivered", "identity": {"messagingContactId": "demo-contact-00000"},
                     "payload": {"messageId": "demo-bad-5", "channel": "EMAIL"}},
            "opts": {},
        },
        {
            "name": "contactPreference.updated",
            "data": {"payload": {"eventId": "demo-bad-6", "tenantId": tenant, "contactId": "demo-contact-00000"}},
            "opts": {},
        },
    ]  # fmt: skip


def _engagement(
    stream: _Stream, person: DemoContact, *, message_id: str, channel: str, sent_at: datetime, template_id: str
) -> list[dict[str, Any]]:
    """What a delivered message earned: opens and clicks of an email, a reply to an SMS."""
    rng, about = stream.rng, {"contact_id": person.contact_id, "message_id": message_id}
    jobs: list[dict[str, Any]] = []
    if channel == "EMAIL" and rng.random() < 0.6:
        opened_at = sent_at + timedelta(minutes=rng.randrange(5, 600))
        campaign_id = f"demo-campaign-{template_id}"
        opened = events.job(
            EventType.EMAIL_OPENED,
            **about,
            campaign_id=campaign_id,
            opened_at=iso(opened_at),
            device_type=rng.choice(["mobile", "desktop"]),
            user_agent="Mozilla/5.0 (demo)",
        )
        jobs.append(stream.message_job(opened))
        if rng.random() < 0.4:
            clicked = events.job(
                EventType.EMAIL_CLICKED,
                **about,
                campaign_id=campaign_id,
                link_id=f"link-{rng.randrange(1, 4)}",  # drawn before the click's time, as ever
                link_url=f"https://example.com/offer?utm_source=crm&utm_medium=email&utm_campaign={template_id}",
                clicked_at=iso(opened_at + timedelta(seconds=rng.randrange(5, 300))),
            )
            jobs.append(stream.message_job(clicked))
    if channel == "SMS" and rng.random() < 0.5:
        replied = events.job(
            EventType.SMS_REPLIED,
            contact_id=person.contact_id,
            original_message_id=message_id,
            reply_text=rng.choice(["Yes please", "Thanks!", "STOP", "More info?"]),  # drawn before the time
            replied_at=iso(sent_at + timedelta(minutes=rng.randrange(1, 120))),
        )
        jobs.append(stream.message_job(replied))
    return jobs


def _follow_ups(
    stream: _Stream, person: DemoContact, *, message_id: str, channel: str, sent_at: datetime, template_id: str
) -> list[dict[str, Any]]:
    """What became of one message: a bounce or a failure, or a delivery with opens and clicks, or a reply."""
    rng, about = stream.rng, {"contact_id": person.contact_id, "message_id": message_id}
    roll = rng.random()
    if channel == "EMAIL" and roll < 0.1:
        bounced = events.job(
            EventType.MESSAGE_BOUNCED,
            **about,
            bounce_type="hard" if rng.random() < 0.6 else "soft",
            reason="mailbox_not_found",
            bounced_at=iso(sent_at + timedelta(seconds=10)),
        )
        return [stream.message_job(bounced)]
    if roll < 0.15:
        failed = events.job(
            EventType.MESSAGE_FAILED,
            **about,
            reason="invalid_email" if channel == "EMAIL" else "invalid_number",
            failed_at=iso(sent_at + timedelta(seconds=5)),
        )
        return [stream.message_job(failed)]
    delivered = events.job(
        EventType.MESSAGE_DELIVERED,
        **about,
        delivered_at=iso(sent_at + timedelta(seconds=5)),
    )
    engagement = _engagement(
        stream, person, message_id=message_id, channel=channel, sent_at=sent_at, template_id=template_id
    )
    return [stream.message_job(delivered), *engagement]


def _contact_events(
    stream: _Stream, person: DemoContact, index: int, base_ms: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A contact's own events in publishing order (its creation, a consent change, an update), and the
    creation's payload."""
    rng = stream.rng
    event_id, email_opt_in = stream.event_id(), rng.random() < 0.8
    phone, sms_opt_in = (person.phone, rng.random() < 0.5) if rng.random() < 0.7 else (None, None)
    created_job = events.job(
        EventType.CONTACT_CREATED,
        event_id=event_id,
        tenant_id=person.tenant,
        contact_id=person.contact_id,
        email=person.email,
        phone=phone,
        first_name=person.first_name,
        last_name=person.last_name,
        email_opt_in=email_opt_in,
        sms_opt_in=sms_opt_in,
    )
    created = stream.contact_job(created_job, base_ms)
    jobs_for_contact: list[dict[str, Any]] = []

    # Consent change just after the creation; for every 7th contact it is published *before* it.
    preference = None
    if rng.random() < 0.5 or index % 7 == 0:
        channel = rng.choice(OPT_IN_CHANNELS)
        change = events.job(
            EventType.CONTACT_PREFERENCE_UPDATED,
            event_id=stream.event_id(),
            tenant_id=person.tenant,
            contact_id=person.contact_id,
            **{f"{channel}_opt_in": rng.random() < 0.5},
        )
        preference = stream.contact_job(change, base_ms + 50)
    if preference is not None and index % 7 == 0:
        jobs_for_contact += [preference, created]
    else:
        jobs_for_contact.append(created)
        if preference is not None:
            jobs_for_contact.append(preference)

    if rng.random() < 0.3:
        updated = events.job(
            EventType.CONTACT_UPDATED,
            event_id=stream.event_id(),
            tenant_id=person.tenant,
            contact_id=person.contact_id,
            first_name=rng.choice(FIRST_NAMES),
            last_name=person.last_name,
        )
        jobs_for_contact.append(stream.contact_job(updated, base_ms + 70))
    return created_job["data"]["payload"], jobs_for_contact


def _messages(stream: _Stream, person: DemoContact, index: int, created_payload: dict[str, Any]) -> list[dict]:
    """One to three messages, email or SMS, each with its follow-ups; for every 5th contact the bounce,
    failure or delivery arrives before the send."""
    rng, jobs = stream.rng, []
    t0 = DEMO_EPOCH + timedelta(minutes=index * 7)
    for m in range(rng.randint(1, 3)):
        message_id = f"demo-msg-{index:05d}-{m}"
        sent_at = t0 + timedelta(days=1 + m, minutes=rng.randrange(0, 600))
        channel = "SMS" if "phoneNumber" in created_payload and rng.random() < 0.3 else "EMAIL"
        template_id, template_name = rng.choice(TEMPLATES)
        sent_job = events.job(
            EventType.MESSAGE_SENT,
            contact_id=person.contact_id,
            message_id=message_id,
            channel=channel,
            template_id=template_id,
            template_name=template_name,
            campaign_id=f"demo-campaign-{template_id}",
            sent_at=iso(sent_at),
            tenant_id=person.tenant if rng.random() < 0.3 else None,
        )
        sent = stream.message_job(sent_job)
        follow_ups = _follow_ups(
            stream, person, message_id=message_id, channel=channel, sent_at=sent_at, template_id=template_id
        )
        jobs += [*follow_ups, sent] if index % 5 == 0 else [sent, *follow_ups]
    return jobs


def demo_jobs(*, contacts: int = 60, seed: int = 7, tenants: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    tenant_ids = demo_tenant_ids(tenants)
    stream = _Stream(rng)
    out: list[dict[str, Any]] = []
    people = _contacts(rng, contacts, tenant_ids)

    for index, person in enumerate(people):
        base_ms = index * 100
        created_payload, jobs_for_contact = _contact_events(stream, person, index, base_ms)
        jobs_for_contact += _messages(stream, person, index, created_payload)
        if index % 17 == 16:
            deleted = events.job(
                EventType.CONTACT_DELETED,
                event_id=stream.event_id(),
                tenant_id=person.tenant,
                contact_id=person.contact_id,
            )
            jobs_for_contact.append(stream.contact_job(deleted, base_ms + 90))

        # Duplicates: the Messaging service retries: the same job again.
        if index % 6 == 0:
            jobs_for_contact.append(jobs_for_contact[0])  # same eventId, or same data without one
        if index % 9 == 0:
            message_jobs = [j for j in jobs_for_contact if "identity" in (j["data"] or {})]
            if message_jobs:
                jobs_for_contact.append(message_jobs[-1])
        out.extend(jobs_for_contact)

    # A few jobs with the `messaging.` prefix, which the contract tolerates (these duplicate earlier events).
    for job in [j for j in out if j["name"] == "message.delivered"][:3]:
        out.append({**job, "name": f"messaging.{job['name']}"})

    # Interleave tenants a little, as the real producer would, without undoing the planned reorderings:
    # swap only neighbouring jobs of different contacts.
    for i in range(0, len(out) - 1, 2):
        a, b = out[i], out[i + 1]
        if _contact_of(a) != _contact_of(b) and rng.random() < 0.3:
            out[i], out[i + 1] = b, a

    out.extend(_malformed(tenant_ids[0]))
    return out


def _contact_of(job: dict) -> str:
    data = job.get("data")
    if not isinstance(data, dict):
        return ""
    return (data.get("identity") or {}).get("messagingContactId") or (data.get("payload") or {}).get("contactId", "")


def bulk_specs(jobs: list[dict[str, Any]], *, now_ms: int) -> list[dict[str, Any]]:
    """The `addBulk` entries. Contact events get a job timestamp just before `now_ms`, in their planned order."""
    offsets = [j[OFFSET_KEY] for j in jobs if OFFSET_KEY in j]
    base = now_ms - (max(offsets) if offsets else 0) - 1000
    specs = []
    for job in jobs:
        opts = dict(job.get("opts") or {})
        if OFFSET_KEY in job:
            opts["timestamp"] = base + job[OFFSET_KEY]
        specs.append({"name": job["name"], "data": job["data"], "opts": opts})
    return specs
