"""The order of consent statements: which one is in force (docs/decisions.md).

A channel's state is the statement with the greatest `consent_order_key`: occurred-at (clamped to
the receive time), then opt-out before opt-in, then source precedence, then receive time, then the
statement's identity (`consent_tiebreak`), so that every worker, the backfill and a rebuild from
the ledger pick the same statement whatever the arrival order.
"""

import hashlib
from datetime import datetime

from crm.models import ConsentChange, ConsentSource

TIEBREAK_MAX = 160
# At equal occurred-at (after opt-out beats opt-in): a deliberate decision made in the CRM, then the
# person's own reply, then our bounce automation, then the Messaging service's synced state.
SOURCE_PRECEDENCE: dict[str, int] = {
    ConsentSource.MESSAGING_EVENT: 0,
    ConsentSource.BOUNCE_AUTOMATION: 1,
    ConsentSource.SMS_KEYWORD: 2,
    ConsentSource.ADMIN: 3,
}


def consent_tiebreak(*, source: str, source_key: str, occurred_at: datetime) -> str:
    """A statement's identity and ordering key among statements with the same occurred-at."""
    micros = int(occurred_at.timestamp() * 1_000_000)
    tiebreak = f"{source}:{source_key}@{micros}"
    if len(tiebreak) > TIEBREAK_MAX:
        tiebreak = f"{source}:sha256:{hashlib.sha256(tiebreak.encode()).hexdigest()}"
    return tiebreak


def ordered_at(change: ConsentChange) -> datetime:
    """Occurred-at for ordering: a time later than the receive time counts as the receive time."""
    if change.received_at is not None and change.occurred_at > change.received_at:
        return change.received_at
    return change.occurred_at


def consent_order_key(change: ConsentChange) -> tuple:
    """Last-writer-wins order; the greatest statement decides (module doc, docs/decisions.md)."""
    at = ordered_at(change)
    return (
        at,
        not change.opted_in,
        SOURCE_PRECEDENCE.get(change.source, -1),
        change.received_at or at,
        change.tiebreak,
    )
