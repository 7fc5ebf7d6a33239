"""Campaign interactions: one row per (tenant, message, type), upserted in one statement.

`INSERT ... ON CONFLICT DO UPDATE`: repeats add to `count`, `first_at`/`last_at` take the
least/greatest. The campaign, template and channel of a non-SENT row come from the event when it
carries them, else from the message's SENT row; a SENT that arrives later fills them in where
still empty. Two different non-empty values merge to the smaller one (deterministic).
Both halves read the other's rows, so a message's SENT and its other interactions are serialised
by an advisory lock on the message (`message_locks_acquire`), taken before the upsert statement:
a delivery recorded while its send commits waits for the send and then sees its row, and a send
waits for the deliveries in flight and then fills them in. Without it each transaction missed
the other's uncommitted row and the delivery never got its campaign.
`email.opened`/`email.clicked` rows are on the EMAIL channel by definition (`EMAIL_CHANNEL`).

The set-based path (`crm.services.message_batches`) shares the merge SQL and the lock.
"""

from collections.abc import Iterable
from datetime import datetime

from django.db import connection

from crm.models import InteractionType, Profile
from crm.services.locks import advisory_locks_acquire, profile_lock

EMAIL_CHANNEL = "EMAIL"

_UPSERT_SQL = """
INSERT INTO crm_campaigninteraction
    (tenant_id, profile_id, message_id, type, campaign_id, template_id, channel, count, first_at, last_at)
SELECT %(tenant)s, %(profile)s, %(message)s::text, %(type)s::text,
       COALESCE(NULLIF(%(campaign)s::text, ''), s.campaign_id, ''),
       COALESCE(NULLIF(%(template)s::text, ''), s.template_id, ''),
       COALESCE(NULLIF(%(channel)s::text, ''), s.channel, ''),
       1, %(at)s::timestamptz, %(at)s::timestamptz
FROM (SELECT 1) AS one
LEFT JOIN crm_campaigninteraction s
       ON s.tenant_id = %(tenant)s AND s.message_id = %(message)s::text AND s.type = 'SENT'
{on_conflict}"""

# Shared with the set-based upsert (crm.services.message_batches), whose rows carry a folded count.
_ON_CONFLICT_SQL = """
ON CONFLICT (tenant_id, message_id, type) DO UPDATE SET
    count = crm_campaigninteraction.count + EXCLUDED.count,
    first_at = LEAST(crm_campaigninteraction.first_at, EXCLUDED.first_at),
    last_at = GREATEST(crm_campaigninteraction.last_at, EXCLUDED.last_at),
    campaign_id = {merge_campaign},
    template_id = {merge_template},
    channel = {merge_channel}
"""


def merge_sql(stored: str, incoming: str) -> str:
    """SQL merging two campaign/template/channel values: the non-empty one, else the smaller (bytewise)."""
    return (
        f"CASE WHEN {stored} = '' THEN {incoming} WHEN {incoming} = '' THEN {stored} "
        f'ELSE LEAST({stored} COLLATE "C", {incoming} COLLATE "C") END'
    )


def _merge(column: str) -> str:
    return merge_sql(f"crm_campaigninteraction.{column}", f"EXCLUDED.{column}")


INTERACTION_ON_CONFLICT_SQL = _ON_CONFLICT_SQL.format(
    merge_campaign=_merge("campaign_id"), merge_template=_merge("template_id"), merge_channel=_merge("channel")
)
UPSERT_SQL = _UPSERT_SQL.format(on_conflict=INTERACTION_ON_CONFLICT_SQL)

_FILL_FROM_SENT_SQL = """
UPDATE crm_campaigninteraction SET
    campaign_id = CASE WHEN campaign_id = '' THEN %(campaign)s::text ELSE campaign_id END,
    template_id = CASE WHEN template_id = '' THEN %(template)s::text ELSE template_id END,
    channel = CASE WHEN channel = '' THEN %(channel)s::text ELSE channel END
WHERE tenant_id = %(tenant)s AND message_id = %(message)s::text AND type <> 'SENT'
  AND ((campaign_id = '' AND %(campaign)s::text <> '')
       OR (template_id = '' AND %(template)s::text <> '')
       OR (channel = '' AND %(channel)s::text <> ''))
"""


def message_locks_acquire(*, sent: Iterable[tuple[int, str]], others: Iterable[tuple[int, str]]) -> None:
    """Lock messages, given as (tenant id, message id), before upserting their interactions.

    A SENT takes its message exclusively and every other interaction takes it shared: a send and a
    delivery of one message never overlap, two deliveries or opens still do. Each upsert runs in
    its own statement after this one, so under READ COMMITTED it sees what the transaction it
    waited for committed. Lock order: after the profiles, before the interaction rows.
    """
    advisory_locks_acquire(
        *(f"message:{tenant}:{message}" for tenant, message in sent),
        shared=[f"message:{tenant}:{message}" for tenant, message in others],
    )


def interaction_record(
    *,
    profile: Profile,
    message_id: str,
    type: str,
    occurred_at: datetime,
    campaign_id: str = "",
    template_id: str = "",
    channel: str = "",
) -> None:
    params: dict[str, str | int | datetime | None] = {
        "tenant": profile.tenant_id,
        "profile": profile.pk,
        "message": message_id,
        "type": type,
        "campaign": campaign_id or "",
        "template": template_id or "",
        "channel": channel or "",
        "at": occurred_at,
    }
    profile_lock(profile.pk)  # the batch path's lock order: the profile before the message
    message = [(profile.tenant_id, message_id)]
    sent = type == InteractionType.SENT
    message_locks_acquire(sent=message if sent else [], others=[] if sent else message)
    with connection.cursor() as cursor:
        cursor.execute(UPSERT_SQL, params)
        if type == InteractionType.SENT:
            cursor.execute(_FILL_FROM_SENT_SQL, params)
