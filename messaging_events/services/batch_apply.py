"""The worker's hot path: apply a Celery batch with set-based SQL, one transaction for the batch.

`message.sent`, `message.delivered`, `email.opened` and `email.clicked` (nearly all of a campaign's
events) are applied together in a fixed number of statements, whatever the batch size:

1. fold in-batch duplicates of one identity (same `(tenant_ref, event_type, idempotency_key)` and the same data)
   into one row whose delivery count is the number of copies;
2. claim every inbox row in one multi-row `INSERT … ON CONFLICT DO UPDATE … RETURNING`, in identity
   order; the returned rows are mapped back by identity, never by position. As in the per-event claim,
   a row already applied, ignored or rejected is a duplicate: only its delivery count changes, and a
   delivery whose content differs from its row's opens a conflict and is never applied;
3. fetch the contact links of the message events in one query;
4. apply the new contacts' sign-ups (below): their identity locks, taken in one statement with the waits for
   any identity resolution in flight of the message events' unknown contacts (`locks.contact_identities_wait`),
   a check that they are still new, then `crm.services.backfill_bulk.new_contacts_write` (profiles, links,
   addresses, ledger, consent states, activities, segment memberships) in a fixed number of statements. The
   links of the contacts still unknown are fetched again: an unknown contact parks its event, a stated
   tenant other than the link's rejects it (as `messaging_events.handlers` does);
5. record the applied ones with `crm.services.message_batches` (score-refresh rows, profile locks,
   activities, interactions, attributions, profile timestamps);
6. close every claimed row in one `UPDATE` of statuses (with the warnings of values the contract dropped).

`contact.created` of a contact the CRM does not know, sharing no contactId, email or phone with another
event of the batch that takes the per-event path (`batch_signups`: 29% of the mixed stream), is applied in
the same transaction, before the messages, with exactly the per-event path's effect for a new contact.
Every other event of the batch (the other contact and consent events, bounces, failures, replies,
rejections) keeps the per-event path (`inbox.process_batch`), and runs first, in batch order, so that
contacts created in the batch are linked before their messages are applied. Replays (`apply_batch(...,
replay=True)`) use the per-event path; parked message events are re-applied set-based, as replays
(`replay_set_based`, called by `parking`: no delivery counted; the same transaction and lock order).

One bad event must not fail its batch-mates: if the set-based transaction raises (a database error,
a deadlock included, or a bug), it is rolled back as a whole and the same events run through the
per-event path, where only the bad one ends `failed` and transient errors reach the Celery retry.
Such fallbacks are counted (`fallback_batches()`) and logged as `batch_fallback`; they should stay rare.
"""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from crm.errors import ApplicationError
from crm.models import ContactLink, InteractionType, Tenant
from crm.services.backfill_bulk import contacts_unknown, new_contacts_write
from crm.services.contacts import ContactImportOutcome
from crm.services.identity import contact_link_check_tenant, identity_locks
from crm.services.message_batches import LinkRow, MessageRecord, contact_links_fetch, message_records_apply
from crm.services.prepared import prepared_cursor
from crm.services.recordsets import recordset_json
from crm.services.tenants import tenant_get_or_create, tenants_create
from messaging_events import metrics
from messaging_events.contract.jobs import BridgedJob, Event, Rejection, canonical_json, content_hash, parse_job
from messaging_events.contract.routing import EventType
from messaging_events.contract.schemas import MessagePayload, Payload
from messaging_events.models import InboundEventStatus
from messaging_events.outcomes import Outcome
from messaging_events.services import inbox
from messaging_events.services.batch_signups import SignupPlanChanged, copy_key, signup_statement, signups_select

logger = logging.getLogger(__name__)

SET_BASED_TYPES: dict[EventType, InteractionType] = {
    EventType.MESSAGE_SENT: InteractionType.SENT,
    EventType.MESSAGE_DELIVERED: InteractionType.DELIVERED,
    EventType.EMAIL_OPENED: InteractionType.OPENED,
    EventType.EMAIL_CLICKED: InteractionType.CLICKED,
}

# The claim writes the same columns, with the same values and the same conflict rule, as the per-event
# claim (`inbox._CLAIM_SQL`); only the delivery count is the number of folded copies. A column added
# there is added here as (name, SQL type) and as a key of `_claim_row`. Its `replay` variant is the
# per-event claim's `replay` cases: no delivery counted, the replayed content becomes the row's, no conflict.
_CLAIM_COLUMNS = (
    ("tenant_ref", "text"),
    ("idempotency_key", "text"),
    ("event_type", "text"),
    ("priority", "text"),
    ("messaging_contact_id", "text"),
    ("bullmq_job_id", "text"),
    ("job_name", "text"),
    ("raw_data", "jsonb"),
    ("occurred_at", "timestamptz"),
    ("job_timestamp", "timestamptz"),
    ("job_attempts", "int"),
    ("deliveries", "int"),
    ("content_hash", "text"),
)
_SAME_CONTENT = "(inbox.content_hash = '' OR EXCLUDED.content_hash IN (inbox.content_hash, inbox.conflict_hash))"
_NEW_HASH = "CASE WHEN inbox.content_hash = '' THEN EXCLUDED.content_hash ELSE inbox.content_hash END"


def _claim_sql(*, replay: bool) -> str:
    deliveries = "inbox.deliveries" if replay else "inbox.deliveries + EXCLUDED.deliveries"
    content = "EXCLUDED.content_hash" if replay else _NEW_HASH
    return f"""
INSERT INTO messaging_events_inboundevent AS inbox
    ({", ".join(name for name, _ in _CLAIM_COLUMNS)},
     received_at, updated_at, status, error, attempts, conflict, conflict_hash)
SELECT {", ".join(f"c.{name}" for name, _ in _CLAIM_COLUMNS)}, now(), now(), 'received', '', 0, '', ''
FROM jsonb_to_recordset(%s::jsonb) AS c(ord int, {", ".join(f"{name} {sql_type}" for name, sql_type in _CLAIM_COLUMNS)})
ORDER BY c.ord
ON CONFLICT (tenant_ref, event_type, idempotency_key) DO UPDATE SET
    deliveries = {deliveries},
    job_attempts = GREATEST(inbox.job_attempts, EXCLUDED.job_attempts),
    content_hash = {content},
{"" if replay else inbox.claim_conflict_sql(_SAME_CONTENT)}
    updated_at = now()
RETURNING id, tenant_ref, event_type, idempotency_key, status, (xmax = 0) AS inserted, content_hash
"""


_CLAIM_SQL = {replay: _claim_sql(replay=replay) for replay in (False, True)}

_CLOSE_SQL = """
UPDATE messaging_events_inboundevent e SET
    attempts = e.attempts + 1,
    status = v.status,
    tenant_id = v.tenant_id,
    error = v.error,
    warnings = v.warnings,
    applied_at = CASE WHEN v.status = 'applied' THEN now() END,
    updated_at = now()
FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, status text, tenant_id bigint, error text, warnings jsonb)
WHERE e.id = v.id
"""

Identity = tuple[str, str, str]  # (tenant_ref, event_type, idempotency_key) as stored

_fallback_batches = 0
_set_based_signups = 0


def fallback_batches() -> int:
    """Set-based batches this process has rolled back and re-run per event."""
    return _fallback_batches


def set_based_signups() -> int:
    """Sign-ups this process has applied set-based (not rolled back into the fallback): the order property
    checks that its streams reach them."""
    return _set_based_signups


@dataclass
class _Claim:
    """One identity of the batch: its first copy, and how many copies arrived."""

    job: BridgedJob
    event: Event[Payload]
    copies: int = 1
    job_attempts: int = 0
    row_id: int = 0
    status: str = ""
    other_content: bool = False  # same identity, other content than the row's: a conflict, never applied
    outcome: Outcome | None = None

    @property
    def identity(self) -> Identity:
        return _identity(self.event)


def _identity(event: Event[Payload]) -> Identity:
    strip = inbox._strip_nul
    return strip(event.tenant_ref), strip(event.type.value)[:64], strip(event.idempotency_key)


def _fold(events: Iterable[tuple[BridgedJob, Event[Payload]]]) -> tuple[list[_Claim], list[BridgedJob]]:
    """One claim per identity, in identity order (the lock order). A copy whose data differs from the first
    copy's is not folded: it is returned to go through the per-event path, which judges such conflicts."""
    claims: dict[Identity, _Claim] = {}
    content: dict[Identity, str] = {}
    different: list[BridgedJob] = []
    for job, event in events:
        identity = _identity(event)
        claim = claims.get(identity)
        if claim is None:
            claims[identity] = _Claim(job, event, job_attempts=event.job.attempts_made)
            content[identity] = canonical_json(event.raw)
        elif canonical_json(event.raw) != content[identity]:
            different.append(job)
        else:
            claim.copies += 1
            claim.job_attempts = max(claim.job_attempts, event.job.attempts_made)
    return [claims[identity] for identity in sorted(claims)], different


def _claim_row(claim: _Claim, ord: int) -> dict[str, Any]:
    """The values the per-event claim would write for this event (`inbox._claim`)."""
    event, meta = claim.event, claim.event.job
    tenant_ref, event_type, key = claim.identity
    raw = inbox._strip_nul(event.raw)
    return {
        "ord": ord,
        "tenant_ref": tenant_ref,
        "idempotency_key": key,
        "event_type": event_type,
        "priority": event.priority.value,
        "messaging_contact_id": inbox._strip_nul(event.contact_id),
        "bullmq_job_id": inbox._strip_nul(meta.job_id)[:64],
        "job_name": inbox._strip_nul(meta.name)[:128],
        "raw_data": raw,
        "occurred_at": event.occurred_at,
        "job_timestamp": meta.timestamp,
        "job_attempts": claim.job_attempts,
        "deliveries": claim.copies,
        "content_hash": content_hash(raw),
    }


def _claim_rows(claims: list[_Claim], *, replay: bool) -> None:
    """One multi-row claim; fills each claim's row id and status from RETURNING, matched by identity."""
    by_identity = {claim.identity: claim for claim in claims}
    rows = [_claim_row(claim, n) for n, claim in enumerate(claims)]
    hashes = {(row["tenant_ref"], row["event_type"], row["idempotency_key"]): row["content_hash"] for row in rows}
    with prepared_cursor() as cursor:
        cursor.execute(_CLAIM_SQL[replay], [recordset_json(rows)])
        returned = cursor.fetchall()
    for row_id, tenant_ref, event_type, key, status, inserted, stored_hash in returned:
        identity = (tenant_ref, event_type, key)
        claim = by_identity[identity]
        claim.row_id = row_id
        claim.status = InboundEventStatus.RECEIVED if inserted else status
        claim.other_content = stored_hash != hashes[identity]
    if len(returned) != len(claims):
        raise RuntimeError(f"claim returned {len(returned)} rows for {len(claims)} identities")


def _record(claim: _Claim, link: LinkRow) -> MessageRecord:
    p = claim.event.payload
    assert isinstance(p, MessagePayload)  # SET_BASED_TYPES are message events (schemas.SCHEMAS)
    kind = SET_BASED_TYPES[claim.event.type]
    return MessageRecord(
        kind=kind,
        tenant_id=link.tenant_id,
        profile_id=link.profile_id,
        source_event_id=claim.row_id,
        occurred_at=claim.event.occurred_at,
        message_id=p.messageId,
        channel=getattr(p, "channel", None) or "",
        template_id=getattr(p, "templateId", None) or "",
        template_name=getattr(p, "templateName", None) or "",
        campaign_id=getattr(p, "campaignId", None) or "",
        device_type=getattr(p, "deviceType", None) or "",
        link_id=getattr(p, "linkId", None) or "",
        link_url=getattr(p, "linkUrl", None) or "",
    )


def _judge(claim: _Claim, link: LinkRow | None) -> Outcome:
    """What `handlers._message_event` decides: parked, rejected (tenant mismatch) or applied."""
    event = claim.event
    if link is None:
        tenant_id = tenant_get_or_create(event.tenant_ref).pk if event.tenant_ref else None
        return Outcome.parked(tenant_id, f"contact {event.contact_id} is not known yet")
    try:
        contact_link_check_tenant(
            link=ContactLink(messaging_contact_id=link.contact_id, tenant=Tenant(external_id=link.tenant_external_id)),
            tenant_external_id=event.tenant_ref,
        )
    except ApplicationError as exc:
        return Outcome(InboundEventStatus.REJECTED, inbox._tenant_of(event), exc.message)
    return Outcome.applied(link.tenant_id)


def _close(judged: list[tuple[_Claim, Outcome]]) -> None:
    rows = [
        {
            "id": c.row_id,
            "status": outcome.status.value,
            "tenant_id": outcome.tenant_id,
            "error": inbox._strip_nul(outcome.note)[:4000],
            "warnings": inbox.warnings_of(c.event),
        }
        for c, outcome in judged
    ]
    with prepared_cursor() as cursor:
        cursor.execute(_CLOSE_SQL, [recordset_json(rows)])


def _signups_apply(claims: list[_Claim], *, waits: set[str]) -> list[tuple[_Claim, Outcome]]:
    """The sign-ups planned "new" (`batch_signups`): under their identity locks (as `contact_statement_apply`
    takes them), checked again to be new, then written by the backfill's bulk writer. Each is applied with
    the outcome `handlers.contact_created` reports for a new contact.

    The same statement waits for the identity resolutions in flight of the `waits` contacts (the batch's
    message events whose contacts have no link: `locks.contact_identities_wait`). Taken in two statements, a
    batch holding its sign-ups' locks could wait for another batch that holds the locks of its sign-ups and
    waits for this one's: a deadlock (seen in the bench, when each signed up a contact the other had a
    message for)."""
    statements = [signup_statement(c.event, c.row_id) for c in claims]
    identity_locks(
        ((s.tenant_external_id, s.contact_id, s.email or "", s.phone or "") for s in statements), waits=waits
    )
    if not statements:
        return []
    if not all(contacts_unknown(statements)):
        raise SignupPlanChanged(f"{len(statements)} sign-ups planned new; another worker linked some since")
    tenants = new_contacts_write(statements)
    judged = []
    for claim, statement in zip(claims, statements, strict=True):
        claim.outcome = Outcome.applied(
            tenants[statement.tenant_external_id],
            note=ContactImportOutcome.CREATED.value,
            linked=(claim.event.contact_id,),
        )
        judged.append((claim, claim.outcome))
    return judged


def _apply_claims(claims: list[_Claim], *, replay: bool = False) -> None:
    """The set-based transaction's body. Lock order: inbox rows by identity, then the sign-ups' identity
    locks with the unknown contacts' waits (one statement), then (in message_records_apply) score-refresh rows,
    profiles by id, message locks, interactions by key."""
    _claim_rows(claims, replay=replay)
    # New, parked or failed rows are (re)applied, rejected ones too on replay; a conflicting delivery never
    # is (`inbox.status_runnable`; the log lines are `_report`'s).
    todo = [c for c in claims if not c.other_content and inbox.status_runnable(c.status, replay=replay)]
    signups = [c for c in todo if c.event.type is EventType.CONTACT_CREATED]
    todo = [c for c in todo if c.event.type in SET_BASED_TYPES]
    links = contact_links_fetch(contact_ids=(c.event.contact_id for c in todo))
    # Contacts with no link: their events would park. First let a contact.created linking one of them commit
    # (in the sign-ups' lock statement), and write the batch's own sign-ups, then look again.
    unknown = {c.event.contact_id for c in todo} - links.keys()
    judged = _signups_apply(signups, waits=unknown)
    if unknown:
        links |= contact_links_fetch(contact_ids=unknown)
    records = []
    for claim in todo:
        link = links.get(claim.event.contact_id)
        claim.outcome = outcome = _judge(claim, link)
        judged.append((claim, outcome))
        if link is not None and outcome.status == InboundEventStatus.APPLIED:  # `_judge` applies only with a link
            records.append(_record(claim, link))
    message_records_apply(records=records)
    if judged:
        _close(judged)


def _transaction(claims: list[_Claim], *, events: int, replay: bool = False) -> bool:
    """The set-based transaction. False if it raised: then it was rolled back as a whole, and the fallback
    is counted and logged; the caller runs the events per event, which isolates the bad one."""
    global _fallback_batches
    try:
        with transaction.atomic():
            _apply_claims(claims, replay=replay)
    except Exception as exc:
        _fallback_batches += 1
        # The type and SQLSTATE only: a database error's message can quote personal data.
        logger.warning(
            "batch_fallback events=%d fallbacks=%d error=%s sqlstate=%s",
            events,
            _fallback_batches,
            type(exc).__name__,
            getattr(exc.__cause__, "sqlstate", None) or "",
        )
        return False
    return True


def _apply_set_based(events: list[tuple[BridgedJob, Event[Payload]]]) -> inbox.BatchResult:
    global _set_based_signups
    claims, different = _fold(events)
    started = time.perf_counter()
    # A sign-up's new tenant is committed first. Inserted inside the transaction, behind the sign-ups' identity
    # locks, its row would make another batch that inserted the same tenant wait for those locks to park its
    # messages while this one waits for its tenant row: a deadlock (seen in the bench on a fresh database).
    tenants_create([c.event.tenant_ref for c in claims if c.event.type is EventType.CONTACT_CREATED])
    if not _transaction(claims, events=len(events)):
        return inbox.process_batch([job for job, _ in events])
    _set_based_signups += sum(1 for c in claims if c.outcome is not None and c.event.type is EventType.CONTACT_CREATED)
    result = _report(claims, started)
    if different:
        _merge(result, inbox.process_batch(different))
    return result


def replay_set_based(events: list[tuple[BridgedJob, Event[Payload]]]) -> list[str] | None:
    """Re-apply stored events of `SET_BASED_TYPES` (one job per inbox row: `parking`) in one set-based
    transaction, with the effect `inbox.process_job(job, replay=True)` has on each: no delivery counted,
    a rejected row judged again. Returns each event's final status, in the given order, or None if the
    transaction raised (a fallback, counted and logged): then the caller replays the events per event."""
    claims = [_Claim(job, event, job_attempts=event.job.attempts_made) for job, event in events]
    in_lock_order = sorted(claims, key=lambda claim: claim.identity)
    started = time.perf_counter()
    if not _transaction(in_lock_order, events=len(events), replay=True):
        return None
    _report(in_lock_order, started)
    return [c.outcome.status if c.outcome is not None else c.status for c in claims]


def _report(claims: list[_Claim], started: float) -> inbox.BatchResult:
    """Log and count each committed claim's outcome, as the per-event path does."""
    seconds_each = (time.perf_counter() - started) / len(claims)
    result = inbox.BatchResult()
    for claim in claims:
        if claim.outcome is not None:
            inbox._log_outcome(claim.event, claim.outcome, seconds_each)
        elif claim.other_content:
            logger.warning(
                "event_conflict key=%s type=%s job=%s",
                claim.event.idempotency_key,
                claim.event.type,
                claim.event.job.job_id,
            )
        else:
            metrics.record_event(claim.event.type.value, "duplicate")
        for _ in range(claim.copies):
            result.count(claim.outcome.status if claim.outcome is not None else claim.status)
        if claim.outcome is not None:
            result.linked_contact_ids.update(claim.outcome.linked_contact_ids)
    return result


def _merge(into: inbox.BatchResult, other: inbox.BatchResult) -> None:
    for status, count in other.statuses.items():
        into.statuses[status] = into.statuses.get(status, 0) + count
    into.transient.extend(other.transient)
    into.linked_contact_ids.update(other.linked_contact_ids)


def apply_batch(jobs: list[BridgedJob], *, replay: bool = False) -> inbox.BatchResult:
    """Apply a Celery batch: everything but the message events and the new contacts' sign-ups per event
    (first, in batch order), then those set-based in one transaction (sign-ups before messages)."""
    if replay:
        return inbox.process_batch(jobs, replay=True)
    messages: list[tuple[BridgedJob, Event[Payload]]] = []
    others: list[tuple[BridgedJob, Event[Payload] | Rejection]] = []
    for job in jobs:
        parsed = parse_job(job)
        if isinstance(parsed, Event) and parsed.type in SET_BASED_TYPES:
            messages.append((job, parsed))
        else:
            others.append((job, parsed))
    new_contacts = {copy_key(event) for event in signups_select([parsed for _, parsed in others])}
    signups: list[tuple[BridgedJob, Event[Payload]]] = []
    per_event: list[BridgedJob] = []
    for job, parsed in others:
        if isinstance(parsed, Event) and copy_key(parsed) in new_contacts:
            signups.append((job, parsed))
        else:
            per_event.append(job)
    result = inbox.process_batch(per_event)
    if signups or messages:
        _merge(result, _apply_set_based(signups + messages))
    return result
