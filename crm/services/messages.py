"""Message and engagement events: timeline activities, campaign interactions, timestamps,
verification, hard-bounce automation, attribution and SMS keyword opt-outs.

Everything here is order-independent:

- `CampaignInteraction` is one row per (tenant, message, type), upserted in one statement
  (`INSERT ... ON CONFLICT DO UPDATE`): repeats add to `count`, `first_at`/`last_at` take the
  least/greatest. The campaign, template and channel of a non-SENT row come from the event when it
  carries them, else from the message's SENT row; a SENT that arrives later fills them in where
  still empty. Two different non-empty values merge to the smaller one (deterministic).
  Both halves read the other's rows, so a message's SENT and its other interactions are serialised
  by an advisory lock on the message (`message_locks_acquire`), taken before the upsert statement:
  a delivery recorded while its send commits waits for the send and then sees its row, and a send
  waits for the deliveries in flight and then fills them in. Without it each transaction missed
  the other's uncommitted row and the delivery never got its campaign.
  `email.opened`/`email.clicked` rows are on the EMAIL channel by definition.
- `last_message_at`, `last_activity_at`, `last_email_open_at` are `GREATEST(stored, occurred_at)`.
- Verification flags follow `profile_verification_invalidate` (decisions.md: verification).
- Bounce automation depends only on the set of hard-bounce times (decisions.md).
"""

from collections.abc import Iterable
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateTimeField, Value
from django.db.models.functions import Greatest

from crm.models import (
    Activity,
    ActivityType,
    AttributionEvent,
    Channel,
    ConsentSource,
    HardBounce,
    InteractionType,
    Profile,
)
from crm.services.consent import consent_statement_record
from crm.services.engagement import engagement_refresh_request
from crm.services.locks import advisory_locks_acquire, profile_lock
from crm.services.profiles import profile_verification_invalidate

EMAIL_CHANNEL = "EMAIL"
INVALID_EMAIL_MARKERS = ("invalid_email", "invalid_address")
INVALID_PHONE_MARKERS = ("invalid_number", "invalid_phone", "invalid_msisdn")
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
KEYWORD_PUNCTUATION = ".,!?;:'\"()"

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

_HARD_BOUNCE_SQL = """
INSERT INTO crm_hardbounce (tenant_id, profile_id, message_id, occurred_at, contact_id) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (profile_id, message_id) DO UPDATE SET occurred_at = LEAST(crm_hardbounce.occurred_at, EXCLUDED.occurred_at)
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
    params = {
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


def _activity(
    *, profile: Profile, type: str, occurred_at: datetime, data: dict, source_event_id: int | None
) -> Activity:
    return Activity.objects.create(
        tenant_id=profile.tenant_id,
        profile_id=profile.pk,
        type=type,
        occurred_at=occurred_at,
        data=data,
        source_event_id=source_event_id,
    )


def message_sent_data(
    *, message_id: str, channel: str, template_id: str | None, template_name: str | None, campaign_id: str | None
) -> dict[str, str]:
    """The MESSAGE_SENT activity's data (also written by `crm.services.message_batches`)."""
    return {
        "message_id": message_id,
        "channel": channel,
        "template_id": template_id or "",
        "template_name": template_name or "",
        "campaign_id": campaign_id or "",
    }


def email_opened_data(*, message_id: str, campaign_id: str | None, device_type: str | None) -> dict[str, str]:
    return {"message_id": message_id, "campaign_id": campaign_id or "", "device_type": device_type or ""}


def email_clicked_data(
    *, message_id: str, campaign_id: str | None, link_id: str | None, link_url: str | None
) -> dict[str, str]:
    return {
        "message_id": message_id,
        "campaign_id": campaign_id or "",
        "link_id": link_id or "",
        "link_url": link_url or "",
    }


def _touch(*, profile: Profile, fields: tuple[str, ...], occurred_at: datetime) -> None:
    """`field = GREATEST(field, occurred_at)` for each field, in one UPDATE."""
    at = Value(occurred_at, output_field=DateTimeField())
    Profile.objects.filter(pk=profile.pk).update(**{field: Greatest(field, at) for field in fields})


@transaction.atomic(savepoint=False)
def message_sent_record(
    *,
    profile: Profile,
    message_id: str,
    channel: str,
    template_id: str | None,
    template_name: str | None,
    campaign_id: str | None,
    occurred_at: datetime,
    source_event_id: int | None,
) -> None:
    _activity(
        profile=profile,
        type=ActivityType.MESSAGE_SENT,
        occurred_at=occurred_at,
        data=message_sent_data(
            message_id=message_id,
            channel=channel,
            template_id=template_id,
            template_name=template_name,
            campaign_id=campaign_id,
        ),
        source_event_id=source_event_id,
    )
    interaction_record(
        profile=profile,
        message_id=message_id,
        type=InteractionType.SENT,
        occurred_at=occurred_at,
        campaign_id=campaign_id or "",
        template_id=template_id or "",
        channel=channel,
    )
    _touch(profile=profile, fields=("last_message_at",), occurred_at=occurred_at)


@transaction.atomic(savepoint=False)
def message_delivered_record(
    *, profile: Profile, message_id: str, occurred_at: datetime, source_event_id: int | None
) -> None:
    _activity(
        profile=profile,
        type=ActivityType.MESSAGE_DELIVERED,
        occurred_at=occurred_at,
        data={"message_id": message_id},
        source_event_id=source_event_id,
    )
    interaction_record(profile=profile, message_id=message_id, type=InteractionType.DELIVERED, occurred_at=occurred_at)


def failure_invalidates(reason: str | None) -> str | None:
    """The verification flag a failure reason invalidates, if it names a bad address or number."""
    text = (reason or "").lower()
    if any(marker in text for marker in INVALID_EMAIL_MARKERS):
        return "email_verified"
    if any(marker in text for marker in INVALID_PHONE_MARKERS):
        return "phone_verified"
    return None


@transaction.atomic(savepoint=False)
def message_failed_record(
    *,
    profile: Profile,
    message_id: str,
    reason: str | None,
    occurred_at: datetime,
    source_key: str,
    source_event_id: int | None,
) -> None:
    invalidates = failure_invalidates(reason)
    _activity(
        profile=profile,
        type=ActivityType.MESSAGE_FAILED,
        occurred_at=occurred_at,
        data={"message_id": message_id, "reason": reason or "", "invalidates": invalidates or ""},
        source_event_id=source_event_id,
    )
    interaction_record(profile=profile, message_id=message_id, type=InteractionType.FAILED, occurred_at=occurred_at)
    if invalidates:
        profile_verification_invalidate(
            profile=profile, field=invalidates, occurred_at=occurred_at, source_key=source_key
        )


@transaction.atomic(savepoint=False)
def message_bounced_record(
    *,
    profile: Profile,
    message_id: str,
    bounce_type: str,
    reason: str | None,
    occurred_at: datetime,
    source_key: str,
    source_event_id: int | None,
    contact_id: str = "",
) -> None:
    _activity(
        profile=profile,
        type=ActivityType.MESSAGE_BOUNCED,
        occurred_at=occurred_at,
        data={"message_id": message_id, "bounce_type": bounce_type, "reason": reason or ""},
        source_event_id=source_event_id,
    )
    interaction_record(profile=profile, message_id=message_id, type=InteractionType.BOUNCED, occurred_at=occurred_at)
    if bounce_type != "hard":
        return  # soft bounces never change verification or consent
    profile_verification_invalidate(
        profile=profile, field="email_verified", occurred_at=occurred_at, source_key=source_key
    )
    with connection.cursor() as cursor:
        cursor.execute(_HARD_BOUNCE_SQL, [profile.tenant_id, profile.pk, message_id, occurred_at, contact_id])
    hard_bounce_automation_apply(profile=profile, around=None, source_event_id=source_event_id)


def hard_bounce_automation_apply(*, profile: Profile, around: datetime | None, source_event_id: int | None) -> int:
    """Record the automatic email opt-outs the profile's hard bounces call for. Returns how many are new.

    Each hard bounce `b` for which at least `HARD_BOUNCE_OPT_OUT_THRESHOLD` hard bounces lie in
    `[b - HARD_BOUNCE_WINDOW_DAYS, b]` yields an email opt-out occurring at `b` (source "bounce
    automation", keyed by the bounce's message id, so it is recorded once), about the email the bounced
    contact had at `b` (crm.services.contact_points). With `around`, only
    bounces whose window can include `around` are considered.
    """
    window = timedelta(days=settings.HARD_BOUNCE_WINDOW_DAYS)
    threshold = settings.HARD_BOUNCE_OPT_OUT_THRESHOLD
    bounces = HardBounce.objects.filter(profile_id=profile.pk)
    if around is not None:
        bounces = bounces.filter(occurred_at__gte=around - window, occurred_at__lte=around + window)
    rows = sorted(bounces.values_list("occurred_at", "message_id", "contact_id"))
    if len(rows) < threshold:
        return 0
    recorded = 0
    for at, message_id, contact_id in rows:
        if around is not None and at < around:
            continue
        in_window = sum(1 for other, *_ in rows if at - window <= other <= at)
        if in_window >= threshold:
            result = consent_statement_record(
                profile=profile,
                channel=Channel.EMAIL,
                opted_in=False,
                occurred_at=at,
                source=ConsentSource.BOUNCE_AUTOMATION,
                source_key=f"hard-bounce:{message_id}",
                source_event_id=source_event_id,
                contact_id=contact_id,
                lawful_basis=f"at least {threshold} hard bounces within {settings.HARD_BOUNCE_WINDOW_DAYS} days",
            )
            recorded += int(result.recorded)
    return recorded


@transaction.atomic(savepoint=False)
def email_opened_record(
    *,
    profile: Profile,
    message_id: str,
    campaign_id: str | None,
    device_type: str | None,
    occurred_at: datetime,
    source_event_id: int | None,
) -> None:
    engagement_refresh_request(profile_id=profile.pk)  # first: see crm.services.engagement
    _activity(
        profile=profile,
        type=ActivityType.EMAIL_OPENED,
        occurred_at=occurred_at,
        data=email_opened_data(message_id=message_id, campaign_id=campaign_id, device_type=device_type),
        source_event_id=source_event_id,
    )
    interaction_record(
        profile=profile,
        message_id=message_id,
        type=InteractionType.OPENED,
        occurred_at=occurred_at,
        campaign_id=campaign_id or "",
        channel=EMAIL_CHANNEL,
    )
    _touch(profile=profile, fields=("last_activity_at", "last_email_open_at"), occurred_at=occurred_at)


def utm_parameters(link_url: str | None) -> dict[str, str]:
    """The `utm_*` query parameters of a URL (first value of each, at most 200 characters)."""
    if not link_url:
        return {}
    try:
        query = parse_qs(urlsplit(link_url).query, keep_blank_values=False)
    except ValueError:
        return {}
    return {name: query[name][0][:200] for name in UTM_FIELDS if query.get(name)}


def click_attribution(
    *,
    tenant_id: int,
    profile_id: int,
    source_event_id: int | None,
    message_id: str,
    campaign_id: str | None,
    link_id: str | None,
    link_url: str | None,
    occurred_at: datetime,
) -> AttributionEvent | None:
    """The (unsaved) attribution of a click: only when it carries a campaign id or any `utm_*` parameter."""
    utm = utm_parameters(link_url)
    if not (campaign_id or utm):
        return None
    return AttributionEvent(
        tenant_id=tenant_id,
        profile_id=profile_id,
        source_event_id=source_event_id,
        campaign_id=campaign_id or "",
        message_id=message_id,
        link_id=link_id or "",
        link_url=link_url or "",
        occurred_at=occurred_at,
        **utm,
    )


@transaction.atomic(savepoint=False)
def email_clicked_record(
    *,
    profile: Profile,
    message_id: str,
    campaign_id: str | None,
    link_id: str | None,
    link_url: str | None,
    occurred_at: datetime,
    source_event_id: int | None,
) -> None:
    """The click, and an `AttributionEvent` when it carries a campaign id or any `utm_*` parameter
    (the attribution's campaign is the click's own; `link_url` is kept as given)."""
    engagement_refresh_request(profile_id=profile.pk)  # first: see crm.services.engagement
    _activity(
        profile=profile,
        type=ActivityType.EMAIL_CLICKED,
        occurred_at=occurred_at,
        data=email_clicked_data(message_id=message_id, campaign_id=campaign_id, link_id=link_id, link_url=link_url),
        source_event_id=source_event_id,
    )
    interaction_record(
        profile=profile,
        message_id=message_id,
        type=InteractionType.CLICKED,
        occurred_at=occurred_at,
        campaign_id=campaign_id or "",
        channel=EMAIL_CHANNEL,
    )
    attribution = click_attribution(
        tenant_id=profile.tenant_id,
        profile_id=profile.pk,
        source_event_id=source_event_id,
        message_id=message_id,
        campaign_id=campaign_id,
        link_id=link_id,
        link_url=link_url,
        occurred_at=occurred_at,
    )
    if attribution is not None:
        attribution.save(force_insert=True)
    _touch(profile=profile, fields=("last_activity_at",), occurred_at=occurred_at)


def _keyword_form(text: str) -> str:
    return " ".join(text.split()).upper().strip(KEYWORD_PUNCTUATION + " ")


def sms_opt_out_keyword(reply_text: str | None) -> str | None:
    """The opt-out keyword a reply is, if it is one (`settings.SMS_OPT_OUT_KEYWORDS`).

    The whole reply must be the keyword. Case, surrounding punctuation and spacing do not matter:
    whitespace is collapsed and then ignored altogether, so " stop ", "Opt  out", "OPTOUT",
    "STOP ALL" and "StopAll" match "STOP", "OPT OUT" and "STOPALL". "Please stop" does not.
    """
    form = _keyword_form(reply_text or "")
    compact = form.replace(" ", "")
    if not compact:
        return None
    for keyword in settings.SMS_OPT_OUT_KEYWORDS:
        if _keyword_form(keyword).replace(" ", "") == compact:
            return _keyword_form(keyword)
    return None


@transaction.atomic(savepoint=False)
def sms_replied_record(
    *,
    profile: Profile,
    original_message_id: str | None,
    reply_text: str,
    occurred_at: datetime,
    source_key: str,
    source_event_id: int | None,
    contact_id: str = "",
    received_at: datetime | None = None,
) -> None:
    engagement_refresh_request(profile_id=profile.pk)  # first: see crm.services.engagement
    keyword = sms_opt_out_keyword(reply_text)
    _activity(
        profile=profile,
        type=ActivityType.SMS_REPLIED,
        occurred_at=occurred_at,
        data={
            "original_message_id": original_message_id or "",
            "reply_text": reply_text,
            "opt_out_keyword": keyword or "",
        },
        source_event_id=source_event_id,
    )
    _touch(profile=profile, fields=("last_activity_at",), occurred_at=occurred_at)
    if keyword:
        consent_statement_record(
            profile=profile,
            channel=Channel.SMS,
            opted_in=False,
            occurred_at=occurred_at,
            source=ConsentSource.SMS_KEYWORD,
            source_key=source_key,
            source_event_id=source_event_id,
            contact_id=contact_id,  # the phone that contact had when replying
            received_at=received_at,
            lawful_basis=f"SMS reply {keyword!r}",
        )
