"""Failures and bounces: which verification flag a failure invalidates, and the hard-bounce
automation, which depends only on the set of a profile's hard-bounce times (decisions.md).
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection

from crm.models import Channel, ConsentSource, HardBounce, Profile
from crm.services.consent import consent_statement_record

INVALID_EMAIL_MARKERS = ("invalid_email", "invalid_address")
INVALID_PHONE_MARKERS = ("invalid_number", "invalid_phone", "invalid_msisdn")

_HARD_BOUNCE_SQL = """
INSERT INTO crm_hardbounce (tenant_id, profile_id, message_id, occurred_at, contact_id) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (profile_id, message_id) DO UPDATE SET occurred_at = LEAST(crm_hardbounce.occurred_at, EXCLUDED.occurred_at)
"""


def failure_invalidates(reason: str | None) -> str | None:
    """The verification flag a failure reason invalidates, if it names a bad address or number."""
    text = (reason or "").lower()
    if any(marker in text for marker in INVALID_EMAIL_MARKERS):
        return "email_verified"
    if any(marker in text for marker in INVALID_PHONE_MARKERS):
        return "phone_verified"
    return None


def hard_bounce_record(
    *, profile: Profile, message_id: str, occurred_at: datetime, contact_id: str, source_event_id: int | None
) -> None:
    """Keep the hard bounce (once per message, at its earliest time), then apply the automation to all its bounces."""
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
