"""A realistic, seeded stream of Messaging jobs for demos and manual testing.

`demo_jobs(contacts=60, seed=7)` returns BullMQ job specs (`{"name", "data", "opts"}`) in
publishing order, in the two real shapes:

- contact and consent events: `{"payload": {eventId, tenantId, contactId, ...}}`
- message and engagement events: `{"type", "identity": {"messagingContactId"}, "payload"}`,
  some with a top-level `tenantId`, most without (the contact link decides the tenant).

The stream holds every event type, duplicates (the same `eventId` twice, and message
events without an `eventId` sent twice with the same data), reorderings (a preference
change or a bounce published before the `contact.created` / `message.sent` it follows)
and a few malformed jobs. The same seed gives the same jobs, so republishing it changes
nothing in the CRM: every copy finds its inbox row.
"""

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from crm.models import Segment
from crm.services.tenants import tenant_get_or_create
from messaging_events.services.status import bullmq_queue

# Fixed so the same seed gives byte-identical jobs (and so the same identities) on any day.
DEMO_EPOCH = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)

FIRST_NAMES = ["Thandi", "Pieter", "Aisha", "Sipho", "Lerato", "Johan", "Naledi", "Ravi", "Zanele", "Mia", "Kabelo"]
LAST_NAMES = ["Nkosi", "van der Merwe", "Pillay", "Dlamini", "Botha", "Mokoena", "Naidoo", "Smith", "Khumalo"]
TEMPLATES = [("tpl_welcome", "Welcome"), ("tpl_news", "Monthly Newsletter"), ("tpl_offer", "Summer Offer")]
OPT_IN_FIELDS = ["emailOptIn", "smsOptIn", "pushOptIn", "whatsappOptIn"]


@dataclass(frozen=True)
class DemoContact:
    tenant: str
    contact_id: str
    email: str
    phone: str
    first_name: str
    last_name: str


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


OFFSET_KEY = "_timestamp_offset_ms"


class _Stream:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.jobs: list[dict[str, Any]] = []
        self.event_seq = 0

    def event_id(self) -> str:
        self.event_seq += 1
        return f"demo-evt-{self.event_seq:06d}"

    def contact_job(self, name: str, payload: dict, offset_ms: int) -> dict:
        # Contact events carry no time of their own: the job timestamp is when they happened. It is set
        # at publish time (`publish_jobs`), a few seconds in the past, keeping the order these offsets give.
        return {"name": name, "data": {"payload": payload}, "opts": {}, OFFSET_KEY: offset_ms}

    def message_job(self, name: str, contact: DemoContact, payload: dict, *, with_tenant: bool = False) -> dict:
        data: dict[str, Any] = {
            "type": name,
            "identity": {"messagingContactId": contact.contact_id},
            "payload": payload,
        }
        if with_tenant:
            data["tenantId"] = contact.tenant
        return {"name": name, "data": data, "opts": {}}


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


def _malformed(stream: _Stream, tenant: str) -> list[dict]:
    """Jobs the contract must reject, each for a different reason."""
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


# Two segments per demo tenant, so that a newcomer sees memberships follow the events.
# Fields as on `crm.models.Segment`: the engaged one needs a score, which opens and clicks earn.
DEMO_SEGMENTS: tuple[dict[str, Any], ...] = (
    {"name": "Email opted in", "required_consent_channel": "email"},
    {"name": "Engaged last 30 days", "min_engagement_score": 1.0},
)


def demo_tenant_ids(tenants: int) -> list[str]:
    return [f"demo-tenant-{chr(ord('a') + i)}" for i in range(tenants)]


def demo_segments_ensure(*, tenants: int = 3) -> int:
    """Create the demo segments of each demo tenant (and the tenant, as its first event would). Returns how many
    were new. Members are computed as the demo events are applied, like any segment's."""
    created = 0
    for external_id in demo_tenant_ids(tenants):
        tenant = tenant_get_or_create(external_id)
        for rules in DEMO_SEGMENTS:
            _, new = Segment.objects.get_or_create(
                tenant=tenant, name=rules["name"], defaults={k: v for k, v in rules.items() if k != "name"}
            )
            created += new
    return created


def _follow_ups(
    stream: _Stream, person: DemoContact, *, message_id: str, channel: str, sent_at: datetime, template_id: str
) -> list[dict]:
    """What became of one message: a bounce or a failure, or a delivery with opens and clicks, or a reply."""
    rng = stream.rng
    follow_ups: list[dict] = []
    roll = rng.random()
    if channel == "EMAIL" and roll < 0.1:
        follow_ups.append(
            stream.message_job(
                "message.bounced",
                person,
                {
                    "messageId": message_id,
                    "bounceType": "hard" if rng.random() < 0.6 else "soft",
                    "reason": "mailbox_not_found",
                    "bouncedAt": _iso(sent_at + timedelta(seconds=10)),
                },
            )
        )
    elif roll < 0.15:
        follow_ups.append(
            stream.message_job(
                "message.failed",
                person,
                {
                    "messageId": message_id,
                    "reason": "invalid_email" if channel == "EMAIL" else "invalid_number",
                    "failedAt": _iso(sent_at + timedelta(seconds=5)),
                },
            )
        )
    else:
        follow_ups.append(
            stream.message_job(
                "message.delivered",
                person,
                {"messageId": message_id, "deliveredAt": _iso(sent_at + timedelta(seconds=5))},
            )
        )
        if channel == "EMAIL" and rng.random() < 0.6:
            opened_at = sent_at + timedelta(minutes=rng.randrange(5, 600))
            follow_ups.append(
                stream.message_job(
                    "email.opened",
                    person,
                    {
                        "messageId": message_id,
                        "campaignId": f"demo-campaign-{template_id}",
                        "openedAt": _iso(opened_at),
                        "deviceType": rng.choice(["mobile", "desktop"]),
                        "userAgent": "Mozilla/5.0 (demo)",
                    },
                )
            )
            if rng.random() < 0.4:
                follow_ups.append(
                    stream.message_job(
                        "email.clicked",
                        person,
                        {
                            "messageId": message_id,
                            "campaignId": f"demo-campaign-{template_id}",
                            "linkId": f"link-{rng.randrange(1, 4)}",
                            "linkUrl": f"https://example.com/offer?utm_source=crm&utm_medium=email"
                            f"&utm_campaign={template_id}",
                            "clickedAt": _iso(opened_at + timedelta(seconds=rng.randrange(5, 300))),
                        },
                    )
                )
        if channel == "SMS" and rng.random() < 0.5:
            follow_ups.append(
                stream.message_job(
                    "sms.replied",
                    person,
                    {
                        "originalMessageId": message_id,
                        "replyText": rng.choice(["Yes please", "Thanks!", "STOP", "More info?"]),
                        "repliedAt": _iso(sent_at + timedelta(minutes=rng.randrange(1, 120))),
                    },
                )
            )
    return follow_ups


def _contact_events(
    stream: _Stream, person: DemoContact, index: int, base_ms: int
) -> tuple[dict[str, Any], list[dict]]:
    """A contact's own events in publishing order (its creation, a consent change, an update), and the
    creation's payload."""
    rng = stream.rng
    created_payload: dict[str, Any] = {
        "eventId": stream.event_id(),
        "tenantId": person.tenant,
        "contactId": person.contact_id,
        "email": person.email,
        "firstName": person.first_name,
        "lastName": person.last_name,
        "emailOptIn": rng.random() < 0.8,
    }
    if rng.random() < 0.7:
        created_payload["phoneNumber"] = person.phone
        created_payload["smsOptIn"] = rng.random() < 0.5
    created = stream.contact_job("contact.created", created_payload, base_ms)
    jobs_for_contact: list[dict] = []

    # Consent change just after the creation; for every 7th contact it is published *before* it.
    preference = None
    if rng.random() < 0.5 or index % 7 == 0:
        field = rng.choice(OPT_IN_FIELDS)
        preference = stream.contact_job(
            "contactPreference.updated",
            {
                "eventId": stream.event_id(),
                "tenantId": person.tenant,
                "contactId": person.contact_id,
                field: rng.random() < 0.5,
            },
            base_ms + 50,
        )
    if preference is not None and index % 7 == 0:
        jobs_for_contact += [preference, created]
    else:
        jobs_for_contact.append(created)
        if preference is not None:
            jobs_for_contact.append(preference)

    if rng.random() < 0.3:
        jobs_for_contact.append(
            stream.contact_job(
                "contact.updated",
                {
                    "eventId": stream.event_id(),
                    "tenantId": person.tenant,
                    "contactId": person.contact_id,
                    "firstName": rng.choice(FIRST_NAMES),
                    "lastName": person.last_name,
                },
                base_ms + 70,
            )
        )
    return created_payload, jobs_for_contact


def demo_jobs(*, contacts: int = 60, seed: int = 7, tenants: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    tenant_ids = demo_tenant_ids(tenants)
    stream = _Stream(rng)
    out: list[dict[str, Any]] = []
    people = _contacts(rng, contacts, tenant_ids)

    for index, person in enumerate(people):
        t0 = DEMO_EPOCH + timedelta(minutes=index * 7)
        base_ms = index * 100
        created_payload, jobs_for_contact = _contact_events(stream, person, index, base_ms)

        # Messages: one to three per contact, email or SMS, with their follow-ups.
        for m in range(rng.randint(1, 3)):
            message_id = f"demo-msg-{index:05d}-{m}"
            sent_at = t0 + timedelta(days=1 + m, minutes=rng.randrange(0, 600))
            channel = "SMS" if "phoneNumber" in created_payload and rng.random() < 0.3 else "EMAIL"
            template_id, template_name = rng.choice(TEMPLATES)
            sent = stream.message_job(
                "message.sent",
                person,
                {
                    "messageId": message_id,
                    "contactId": person.contact_id,
                    "channel": channel,
                    "templateId": template_id,
                    "templateName": template_name,
                    "campaignId": f"demo-campaign-{template_id}",
                    "sentAt": _iso(sent_at),
                },
                with_tenant=rng.random() < 0.3,
            )
            follow_ups = _follow_ups(
                stream, person, message_id=message_id, channel=channel, sent_at=sent_at, template_id=template_id
            )
            # Reordering: for every 5th contact the bounce/failure/delivery arrives before the send.
            if index % 5 == 0:
                jobs_for_contact += [*follow_ups, sent]
            else:
                jobs_for_contact += [sent, *follow_ups]

        if index % 17 == 16:
            jobs_for_contact.append(
                stream.contact_job(
                    "contact.deleted",
                    {"eventId": stream.event_id(), "tenantId": person.tenant, "contactId": person.contact_id},
                    base_ms + 90,
                )
            )

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

    out.extend(_malformed(stream, tenant_ids[0]))
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


async def publish_jobs(jobs: list[dict[str, Any]], *, chunk: int = 500) -> int:
    """Add the jobs to the Messaging queue with `Queue.addBulk`, as the Node producer does."""
    specs = bulk_specs(jobs, now_ms=int(time.time() * 1000))
    queue = bullmq_queue()
    published = 0
    try:
        for start in range(0, len(specs), chunk):
            batch = specs[start : start + chunk]
            await queue.addBulk(batch)
            published += len(batch)
    finally:
        await queue.close()
    return published
