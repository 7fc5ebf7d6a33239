"""The bench's streams: sign-ups with a campaign, a campaign to contacts the CRM knows, and floods.

`generate`: per contact `contact.created`, then one message of a campaign and what became of it
(`SIGNUP_MIX`: a delivery for every message, opens for ~30% of contacts, clicks for 5%, bounces for 2%, half
hard, failures for 1%, preference changes for 2%, replies for 1%, whose message is an SMS).
`campaign`: one message to each known contact (`CAMPAIGN_MIX`: a delivery, or a failure for 1%, bounces for
2%, opens for 35%, some twice, clicks for 8%). Contacts are spread over the tenants in turn.

Message and engagement events carry no tenant and no eventId, as in the seed (the contact's link decides the
tenant; the content hash identifies the event); contact events carry an eventId.

Jobs come in blocks of CONTACTS_PER_BLOCK contacts, each block ordered by when its events happened, so that
every stretch of the stream has the same mix: a run stopped by its time budget measures the same work per
event as a complete one. `tag` makes every id of a stream unique, so streams can be replayed side by side.
The same arguments give the same stream, except that its times are relative to `now`.
"""

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from messaging_events.contract.routing import EventType
from messaging_events.streams import events
from messaging_events.streams.events import OPT_IN_CHANNELS, StreamJob

FIRST_NAMES = ["Thandi", "John", "Aisha", "Pieter", "Lerato", "Maria", "Sipho", "Anna", "Kagiso", "Chen", "Fatima"]
LAST_NAMES = ["Nkosi", "Smith", "Patel", "van der Merwe", "Mokoena", "Naidoo", "Botha", "Dlamini", "Khumalo", "Wu"]
REPLIES = ["Yes, I'm interested", "Thanks!", "What time does it close?", "STOP", "please call me", "stop "]
FAIL_REASONS = ["invalid_email", "invalid_number", "provider_timeout", "rejected_by_carrier"]
SOFT_REASONS = ["mailbox_full", "temporarily_unavailable"]
HARD_REASONS = ["mailbox_not_found", "domain_not_found"]
DEVICES = ["mobile", "desktop", "tablet"]
CONTACTS_PER_BLOCK = 50
USER_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
)


@dataclass(frozen=True)
class Contact:
    tenant: str
    contact_id: str


def contacts_of(contacts: int, tenants: int, tag: str) -> list[Contact]:
    return [Contact(f"bench-tenant-{i % tenants + 1}", f"c-{tag}-{i:06d}") for i in range(contacts)]


@dataclass(frozen=True)
class Band:
    """The rolls in [low, high): a share of the contacts."""

    low: float
    high: float

    def __contains__(self, roll: float) -> bool:
        return self.low <= roll < self.high


NOBODY = Band(0.0, 0.0)


@dataclass(frozen=True)
class MessageMix:
    """What becomes of each contact's message. One roll per contact decides it and each outcome is a band of
    that roll, so the shares do not overlap by accident (clicks and second opens lie inside `opened`)."""

    replied: Band  # the message is an SMS, and the contact answers it
    failed: Band
    failed_after_delivery: bool  # the failure follows a delivery, instead of taking its place
    bounced: Band
    hard_bounces: Band
    opened: Band
    opened_twice: Band  # a second open, ten minutes after the first
    clicked: Band
    preference_changes: float  # a second, independent draw per contact; 0 draws nothing


SIGNUP_MIX = MessageMix(
    replied=Band(0.0, 0.01),
    bounced=Band(0.01, 0.03),
    hard_bounces=Band(0.01, 0.02),
    failed=Band(0.03, 0.04),
    failed_after_delivery=True,
    opened=Band(0.04, 0.34),
    opened_twice=NOBODY,
    clicked=Band(0.04, 0.09),
    preference_changes=0.02,
)
CAMPAIGN_MIX = MessageMix(
    replied=NOBODY,
    failed=Band(0.0, 0.01),
    failed_after_delivery=False,
    bounced=Band(0.01, 0.03),
    hard_bounces=Band(0.01, 0.02),
    opened=Band(0.03, 0.38),
    opened_twice=Band(0.30, 0.38),
    clicked=Band(0.03, 0.11),
    preference_changes=0.0,
)


@dataclass(frozen=True)
class Campaign:
    """One message per contact: its template, the campaign id's suffix, and when the sends happen."""

    template_id: str
    template_name: str
    name: str  # the campaign id is `campaign-<tenant>-<name>`
    sends_from: timedelta  # before `now`
    sends_over: timedelta
    mix: MessageMix


class _Timeline:
    """Jobs with when they happened; `jobs()` orders them by block, then time, then as added."""

    def __init__(self) -> None:
        self._timed: list[tuple[int, datetime, int, StreamJob]] = []

    def add(self, block: int, moment: datetime, job: StreamJob) -> None:
        self._timed.append((block, moment, len(self._timed), job))

    def jobs(self) -> list[StreamJob]:
        self._timed.sort(key=lambda item: item[:3])
        return [job for *_, job in self._timed]


def _stamp(moment: datetime) -> str:
    return events.iso(moment, "milliseconds")


def _engagement(
    rng: random.Random,
    timeline: _Timeline,
    block: int,
    contact: Contact,
    message_id: str,
    campaign_id: str,
    sent: datetime,
    roll: float,
    mix: MessageMix,
) -> None:
    """Opens (once or twice) and a click, for a contact whose roll lies in the mix's bands."""
    about = {"contact_id": contact.contact_id, "message_id": message_id}
    opened = sent + timedelta(seconds=rng.randrange(60, 3000))
    for n in range(2 if roll in mix.opened_twice else 1):
        at = opened + timedelta(seconds=n * 600)
        job = events.job(
            EventType.EMAIL_OPENED,
            **about,
            campaign_id=campaign_id,
            opened_at=_stamp(at),
            device_type=rng.choice(DEVICES),
            user_agent=USER_AGENT,
        )
        timeline.add(block, at, job)
    if roll in mix.clicked:
        at = opened + timedelta(seconds=rng.randrange(5, 300))
        job = events.job(
            EventType.EMAIL_CLICKED,
            **about,
            campaign_id=campaign_id,
            link_id=f"link-{rng.randrange(1, 4)}",
            link_url=f"https://example.com/offer?utm_source=crm&utm_medium=email&utm_campaign={campaign_id}",
            clicked_at=_stamp(at),
        )
        timeline.add(block, at, job)


def _message(
    rng: random.Random,
    timeline: _Timeline,
    index: int,
    contact: Contact,
    tag: str,
    shape: Campaign,
    sent: datetime,
    now: datetime,
) -> None:
    """One message to the contact and all that its roll in the campaign's mix makes of it."""
    mix, cid, block = shape.mix, contact.contact_id, index // CONTACTS_PER_BLOCK
    message_id, campaign_id = f"msg-{tag}-{index}", f"campaign-{contact.tenant}-{shape.name}"
    about = {"contact_id": cid, "message_id": message_id}
    roll = rng.random()
    sent_job = events.job(
        EventType.MESSAGE_SENT,
        **about,
        channel="SMS" if roll in mix.replied else "EMAIL",
        template_id=shape.template_id,
        template_name=shape.template_name,
        campaign_id=campaign_id,
        sent_at=_stamp(sent),
    )
    timeline.add(block, sent, sent_job)
    if roll in mix.failed:
        at = sent + timedelta(seconds=8)
        failed = events.job(
            EventType.MESSAGE_FAILED,
            **about,
            reason=rng.choice(FAIL_REASONS),
            failed_at=_stamp(at),
        )
        timeline.add(block, at, failed)
    if roll not in mix.failed or mix.failed_after_delivery:
        at = sent + timedelta(seconds=5)
        timeline.add(
            block,
            at,
            events.job(EventType.MESSAGE_DELIVERED, **about, delivered_at=_stamp(at)),
        )
    if roll in mix.bounced:
        hard, at = roll in mix.hard_bounces, sent + timedelta(seconds=10)
        bounced = events.job(
            EventType.MESSAGE_BOUNCED,
            **about,
            bounce_type="hard" if hard else "soft",
            reason=rng.choice(HARD_REASONS if hard else SOFT_REASONS),
            bounced_at=_stamp(at),
        )
        timeline.add(block, at, bounced)
    if roll in mix.opened:
        _engagement(rng, timeline, block, contact, message_id, campaign_id, sent, roll, mix)
    if mix.preference_changes and rng.random() < mix.preference_changes:  # one opt-in field each, as in the seed
        at = sent + timedelta(seconds=rng.randrange(60, 5000))
        stated = {f"{rng.choice(OPT_IN_CHANNELS)}_opt_in": rng.random() < 0.3}
        change = events.job(
            EventType.CONTACT_PREFERENCE_UPDATED,
            tenant_id=contact.tenant,
            contact_id=cid,
            event_id=f"evt-{tag}-{index}-pref",
            **stated,
        )
        timeline.add(block, min(at, now), change)
    if roll in mix.replied:
        at = sent + timedelta(seconds=rng.randrange(60, 3000))
        reply = events.job(
            EventType.SMS_REPLIED,
            contact_id=cid,
            original_message_id=message_id,
            reply_text=rng.choice(REPLIES),
            replied_at=_stamp(at),
        )
        timeline.add(block, at, reply)


def _sends(shape: Campaign, now: datetime, count: int) -> Iterator[datetime]:
    start = now - shape.sends_from
    for index in range(count):
        yield start + timedelta(seconds=index * shape.sends_over.total_seconds() / max(count, 1))


def _signup(rng: random.Random, index: int, contact: Contact, tag: str) -> StreamJob:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return events.job(
        EventType.CONTACT_CREATED,
        event_id=f"evt-{tag}-{index}-created",
        tenant_id=contact.tenant,
        contact_id=contact.contact_id,
        email=f"{first.lower().replace(' ', '')}.{index}.{tag}@example.com",
        phone=f"+2782{rng.randrange(1_000_000, 10_000_000)}",
        first_name=first,
        last_name=last,
        email_opt_in=rng.random() < 0.8,
        sms_opt_in=rng.random() < 0.4,
    )


SPRING = Campaign(
    template_id="template-spring",
    template_name="Spring Newsletter",
    name="spring",
    sends_from=timedelta(hours=2),
    sends_over=timedelta(minutes=30),
    mix=SIGNUP_MIX,
)


def generate(
    contacts: int = 10_000,
    tenants: int = 4,
    tag: str = "a",
    seed: int = 1,
    *,
    shape: Campaign = SPRING,
    now: datetime | None = None,
) -> list[StreamJob]:
    """Sign-ups over the hour before the campaign's sends, each followed by its message: `{"name", "data"}`
    jobs in occurred-at order (by block)."""
    rng = random.Random(f"{seed}-{tag}")
    now = now or datetime.now(UTC).replace(microsecond=0)
    signups_from = now - shape.sends_from - timedelta(hours=1)
    timeline = _Timeline()
    people = contacts_of(contacts, tenants, tag)
    for index, (contact, sent) in enumerate(zip(people, _sends(shape, now, contacts), strict=True)):
        signup = signups_from + timedelta(seconds=index * 3600 / max(contacts, 1))
        timeline.add(index // CONTACTS_PER_BLOCK, signup, _signup(rng, index, contact, tag))
        _message(rng, timeline, index, contact, tag, shape, sent, now)
    return timeline.jobs()


def campaign(contacts: list[Contact], tag: str, seed: int = 5, *, now: datetime | None = None) -> list[StreamJob]:
    """A campaign to contacts the CRM already knows, sent over the half hour an hour ago (`CAMPAIGN_MIX`)."""
    shape = Campaign(
        template_id="template-campaign",
        template_name="Campaign",
        name=tag,
        sends_from=timedelta(hours=1),
        sends_over=timedelta(minutes=30),
        mix=CAMPAIGN_MIX,
    )
    rng = random.Random(f"{seed}-{tag}")
    now = now or datetime.now(UTC).replace(microsecond=0)
    timeline = _Timeline()
    for index, (contact, sent) in enumerate(zip(contacts, _sends(shape, now, len(contacts)), strict=True)):
        _message(rng, timeline, index, contact, tag, shape, sent, now)
    return timeline.jobs()


def low_flood(contacts: list[Contact], count: int, tag: str, seed: int = 2) -> list[StreamJob]:
    """`count` low-priority events (deliveries and opens) for contacts that exist, shuffled."""
    rng = random.Random(f"{seed}-{tag}")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    jobs = []
    for i in range(count):
        about = {"contact_id": contacts[i % len(contacts)].contact_id, "message_id": f"msg-{tag}-{i}"}
        at = events.iso(start + timedelta(milliseconds=i * 10), "milliseconds")
        if i % 2:
            jobs.append(events.job(EventType.MESSAGE_DELIVERED, **about, delivered_at=at))
        else:
            jobs.append(
                events.job(
                    EventType.EMAIL_OPENED,
                    **about,
                    campaign_id="campaign-flood",
                    opened_at=at,
                    device_type="mobile",
                )
            )
    rng.shuffle(jobs)
    return jobs


def preference_changes(contacts: list[Contact], count: int, tag: str, seed: int = 3) -> Iterator[StreamJob]:
    """`count` high-priority `contactPreference.updated` events for contacts that exist."""
    rng = random.Random(f"{seed}-{tag}")
    for i, contact in enumerate(rng.sample(contacts, min(count, len(contacts)))):
        yield events.job(
            EventType.CONTACT_PREFERENCE_UPDATED,
            tenant_id=contact.tenant,
            contact_id=contact.contact_id,
            event_id=f"evt-{tag}-{i}-hipri",
            email_opt_in=i % 2 == 0,
        )


def sample(jobs: list[StreamJob], n: int, seed: int = 4) -> list[StreamJob]:
    """n jobs of the stream's mix, in stream order (cycled when n exceeds the stream)."""
    rng = random.Random(seed)
    if n >= len(jobs):
        return [jobs[i % len(jobs)] for i in range(n)]
    keep = sorted(rng.sample(range(len(jobs)), n))
    return [jobs[i] for i in keep]
