"""A realistic mixed event stream, in the job shapes of the Messaging service's seed contract.

Per contact: `contact.created`, one `message.sent` and its `message.delivered`; opens for ~30% of
contacts, clicks for 5%, bounces for 2% (half hard), failures for 1%, preference changes for 2%,
replies for 1% (their message is an SMS). Contacts are spread over several tenants.

Contact and consent events: name = type, `data = {"payload": {eventId, tenantId, contactId, ...}}`.
Message and engagement events: name = type, `data = {type, identity: {messagingContactId}, payload}`,
with no tenant, as in the seed: the contact's link decides it.

Jobs come in blocks of CONTACTS_PER_BLOCK contacts, each block ordered by when its events happened
(sign-up, send, delivery or failure, engagement), so that every stretch of the stream has the same
mix: a run stopped by its time budget measures the same work per event as a complete one.
`tag` makes every id of a stream unique, so streams can be replayed side by side.

    python -m bench.stream --contacts 10000 --tag a > stream.jsonl
"""

import argparse
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

FIRST_NAMES = ["Thandi", "John", "Aisha", "Pieter", "Lerato", "Maria", "Sipho", "Anna", "Kagiso", "Chen", "Fatima"]
LAST_NAMES = ["Nkosi", "Smith", "Patel", "van der Merwe", "Mokoena", "Naidoo", "Botha", "Dlamini", "Khumalo", "Wu"]
REPLIES = ["Yes, I'm interested", "Thanks!", "What time does it close?", "STOP", "please call me", "stop "]
FAIL_REASONS = ["invalid_email", "invalid_number", "provider_timeout", "rejected_by_carrier"]
SOFT_REASONS = ["mailbox_full", "temporarily_unavailable"]
HARD_REASONS = ["mailbox_not_found", "domain_not_found"]
CONTACTS_PER_BLOCK = 50
USER_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
)


@dataclass(frozen=True)
class Contact:
    tenant: str
    contact_id: str


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message_event(name: str, contact_id: str, payload: dict) -> dict:
    return {"name": name, "data": {"type": name, "identity": {"messagingContactId": contact_id}, "payload": payload}}


def _sent_event(
    cid: str, message_id: str, channel: str, template_id: str, template_name: str, campaign: str, sent: datetime
) -> dict:
    payload = {
        "messageId": message_id,
        "contactId": cid,
        "channel": channel,
        "templateId": template_id,
        "templateName": template_name,
        "campaignId": campaign,
        "sentAt": _iso(sent),
    }
    return _message_event("message.sent", cid, payload)


def contacts_of(contacts: int, tenants: int, tag: str) -> list[Contact]:
    return [Contact(f"bench-tenant-{i % tenants + 1}", f"c-{tag}-{i:06d}") for i in range(contacts)]


def generate(contacts: int = 10_000, tenants: int = 4, tag: str = "a", seed: int = 1) -> list[dict]:
    """The whole stream, as `{"name", "data"}` jobs in occurred-at order."""
    rng = random.Random(f"{seed}-{tag}")
    now = datetime.now(UTC).replace(microsecond=0)
    signup_start = now - timedelta(hours=3)
    send_start = now - timedelta(hours=2)
    timed: list[tuple[int, datetime, int, dict]] = []
    seq = 0
    block = 0

    def add(moment: datetime, job: dict) -> None:
        nonlocal seq
        timed.append((block, moment, seq, job))
        seq += 1

    for index, contact in enumerate(contacts_of(contacts, tenants, tag)):
        cid, tenant = contact.contact_id, contact.tenant
        block = index // CONTACTS_PER_BLOCK
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        signup = signup_start + timedelta(seconds=index * 3600 / max(contacts, 1))
        add(
            signup,
            {
                "name": "contact.created",
                "data": {
                    "payload": {
                        "eventId": f"evt-{tag}-{index}-created",
                        "tenantId": tenant,
                        "contactId": cid,
                        "email": f"{first.lower().replace(' ', '')}.{index}.{tag}@example.com",
                        "phoneNumber": f"+2782{rng.randrange(1_000_000, 10_000_000)}",
                        "firstName": first,
                        "lastName": last,
                        "emailOptIn": rng.random() < 0.8,
                        "smsOptIn": rng.random() < 0.4,
                    }
                },
            },
        )
        roll = rng.random()  # one roll decides the contact's fate, so the shares do not overlap by accident
        replies = roll < 0.01
        channel = "SMS" if replies else "EMAIL"
        message_id = f"msg-{tag}-{index}"
        campaign = f"campaign-{tenant}-spring"
        sent = send_start + timedelta(seconds=index * 1800 / max(contacts, 1))
        add(sent, _sent_event(cid, message_id, channel, "template-spring", "Spring Newsletter", campaign, sent))
        add(
            sent + timedelta(seconds=5),
            _message_event(
                "message.delivered",
                cid,
                {"messageId": message_id, "deliveredAt": _iso(sent + timedelta(seconds=5))},
            ),
        )
        if 0.01 <= roll < 0.03:  # bounces, 2%, half hard
            hard = roll < 0.02
            at = sent + timedelta(seconds=10)
            add(
                at,
                _message_event(
                    "message.bounced",
                    cid,
                    {
                        "messageId": message_id,
                        "bounceType": "hard" if hard else "soft",
                        "reason": rng.choice(HARD_REASONS if hard else SOFT_REASONS),
                        "bouncedAt": _iso(at),
                    },
                ),
            )
        if 0.03 <= roll < 0.04:  # failures, 1%
            at = sent + timedelta(seconds=8)
            add(
                at,
                _message_event(
                    "message.failed",
                    cid,
                    {"messageId": message_id, "reason": rng.choice(FAIL_REASONS), "failedAt": _iso(at)},
                ),
            )
        if 0.04 <= roll < 0.34:  # opens, 30%; the first 5% of contacts also click
            opened = sent + timedelta(seconds=rng.randrange(60, 3000))
            add(
                opened,
                _message_event(
                    "email.opened",
                    cid,
                    {
                        "messageId": message_id,
                        "campaignId": campaign,
                        "openedAt": _iso(opened),
                        "deviceType": rng.choice(["mobile", "desktop", "tablet"]),
                        "userAgent": USER_AGENT,
                    },
                ),
            )
            if roll < 0.09:
                clicked = opened + timedelta(seconds=rng.randrange(5, 300))
                add(
                    clicked,
                    _message_event(
                        "email.clicked",
                        cid,
                        {
                            "messageId": message_id,
                            "campaignId": campaign,
                            "linkId": f"link-{rng.randrange(1, 4)}",
                            "linkUrl": f"https://example.com/offer?utm_source=crm&utm_medium=email&utm_campaign={campaign}",
                            "clickedAt": _iso(clicked),
                        },
                    ),
                )
        if rng.random() < 0.02:  # preference changes, 2%, one opt-in field each as in the seed
            at = sent + timedelta(seconds=rng.randrange(60, 5000))
            field = rng.choice(["emailOptIn", "smsOptIn", "pushOptIn", "whatsappOptIn"])
            add(
                min(at, now),
                {
                    "name": "contactPreference.updated",
                    "data": {
                        "payload": {
                            "eventId": f"evt-{tag}-{index}-pref",
                            "tenantId": tenant,
                            "contactId": cid,
                            field: rng.random() < 0.3,
                        }
                    },
                },
            )
        if replies:
            at = sent + timedelta(seconds=rng.randrange(60, 3000))
            add(
                at,
                _message_event(
                    "sms.replied",
                    cid,
                    {"originalMessageId": message_id, "replyText": rng.choice(REPLIES), "repliedAt": _iso(at)},
                ),
            )
    timed.sort(key=lambda item: item[:3])
    return [job for *_, job in timed]


def campaign(contacts: list[Contact], tag: str, seed: int = 5) -> list[dict]:
    """A campaign to contacts the CRM already knows: per contact `message.sent`, then `message.delivered`
    (or `message.failed` for 1%), a bounce after delivery for 2% (half hard), opens for 35% and clicks
    for 8% (some open twice). In blocks of CONTACTS_PER_BLOCK contacts, each in occurred-at order."""
    rng = random.Random(f"{seed}-{tag}")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    timed: list[tuple[int, datetime, int, dict]] = []
    for index, contact in enumerate(contacts):
        cid, block = contact.contact_id, index // CONTACTS_PER_BLOCK
        message_id = f"msg-{tag}-{index}"
        name = f"campaign-{contact.tenant}-{tag}"
        sent = start + timedelta(seconds=index * 1800 / max(len(contacts), 1))
        events: list[tuple[datetime, dict]] = [
            (sent, _sent_event(cid, message_id, "EMAIL", "template-campaign", "Campaign", name, sent))
        ]
        roll = rng.random()
        if roll < 0.01:
            at = sent + timedelta(seconds=8)
            reason = rng.choice(FAIL_REASONS)
            events.append(
                (
                    at,
                    _message_event(
                        "message.failed", cid, {"messageId": message_id, "reason": reason, "failedAt": _iso(at)}
                    ),
                )
            )
        else:
            at = sent + timedelta(seconds=5)
            events.append(
                (at, _message_event("message.delivered", cid, {"messageId": message_id, "deliveredAt": _iso(at)}))
            )
        if 0.01 <= roll < 0.03:
            hard = roll < 0.02
            at = sent + timedelta(seconds=10)
            payload = {
                "messageId": message_id,
                "bounceType": "hard" if hard else "soft",
                "reason": rng.choice(HARD_REASONS if hard else SOFT_REASONS),
                "bouncedAt": _iso(at),
            }
            events.append((at, _message_event("message.bounced", cid, payload)))
        if 0.03 <= roll < 0.38:
            opened = sent + timedelta(seconds=rng.randrange(60, 3000))
            for n in range(1 if roll < 0.30 else 2):
                at = opened + timedelta(seconds=n * 600)
                payload = {
                    "messageId": message_id,
                    "campaignId": name,
                    "openedAt": _iso(at),
                    "deviceType": rng.choice(["mobile", "desktop", "tablet"]),
                    "userAgent": USER_AGENT,
                }
                events.append((at, _message_event("email.opened", cid, payload)))
            if roll < 0.11:
                at = opened + timedelta(seconds=rng.randrange(5, 300))
                payload = {
                    "messageId": message_id,
                    "campaignId": name,
                    "linkId": f"link-{rng.randrange(1, 4)}",
                    "linkUrl": f"https://example.com/offer?utm_source=crm&utm_medium=email&utm_campaign={name}",
                    "clickedAt": _iso(at),
                }
                events.append((at, _message_event("email.clicked", cid, payload)))
        timed.extend((block, at, len(timed) + n, job) for n, (at, job) in enumerate(events))
    timed.sort(key=lambda item: item[:3])
    return [job for *_, job in timed]


def low_flood(contacts: list[Contact], count: int, tag: str, seed: int = 2) -> list[dict]:
    """`count` low-priority events (deliveries and opens) for contacts that exist."""
    rng = random.Random(f"{seed}-{tag}")
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    jobs = []
    for i in range(count):
        contact = contacts[i % len(contacts)]
        message_id = f"msg-{tag}-{i}"
        at = _iso(now + timedelta(milliseconds=i * 10))
        if i % 2:
            jobs.append(
                _message_event("message.delivered", contact.contact_id, {"messageId": message_id, "deliveredAt": at})
            )
        else:
            jobs.append(
                _message_event(
                    "email.opened",
                    contact.contact_id,
                    {"messageId": message_id, "campaignId": "campaign-flood", "openedAt": at, "deviceType": "mobile"},
                )
            )
    rng.shuffle(jobs)
    return jobs


def preference_changes(contacts: list[Contact], count: int, tag: str, seed: int = 3) -> Iterator[dict]:
    """`count` high-priority `contactPreference.updated` events for contacts that exist."""
    rng = random.Random(f"{seed}-{tag}")
    for i, contact in enumerate(rng.sample(contacts, min(count, len(contacts)))):
        yield {
            "name": "contactPreference.updated",
            "data": {
                "payload": {
                    "eventId": f"evt-{tag}-{i}-hipri",
                    "tenantId": contact.tenant,
                    "contactId": contact.contact_id,
                    "emailOptIn": i % 2 == 0,
                }
            },
        }


def sample(jobs: list[dict], n: int, seed: int = 4) -> list[dict]:
    """n jobs of the stream's mix, in stream order (cycled when n exceeds the stream)."""
    rng = random.Random(seed)
    if n >= len(jobs):
        return [jobs[i % len(jobs)] for i in range(n)]
    keep = sorted(rng.sample(range(len(jobs)), n))
    return [jobs[i] for i in keep]


def write_jsonl(jobs: list[dict], path: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for job in jobs:
            out.write(json.dumps(job, separators=(",", ":")) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--tag", default="a")
    args = parser.parse_args()
    for job in generate(args.contacts, args.tenants, args.tag):
        sys.stdout.write(json.dumps(job, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
