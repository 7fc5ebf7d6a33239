"""Message and engagement events, one record function per event type: the timeline activity,
the campaign interaction (`crm.services.interactions`), the profile timestamps, verification
(`crm.services.bounces`), attribution (`crm.services.attribution`) and SMS keyword opt-outs
(`crm.services.sms_keywords`).

Everything here is order-independent:

- interactions merge as `crm.services.interactions` describes;
- `last_message_at`, `last_activity_at`, `last_email_open_at` are `GREATEST(stored, occurred_at)`;
- verification flags follow `profile_verification_invalidate` (decisions.md: verification);
- bounce automation depends only on the set of hard-bounce times (decisions.md).
"""

from datetime import datetime

from django.db import transaction
from django.db.models import DateTimeField, Value
from django.db.models.functions import Greatest

from crm.models import Activity, ActivityType, Channel, ConsentSource, InteractionType, Profile
from crm.services.attribution import click_attribution
from crm.services.bounces import failure_invalidates, hard_bounce_record
from crm.services.consent import consent_statement_record
from crm.services.engagement import engagement_refresh_request
from crm.services.interactions import EMAIL_CHANNEL, interaction_record
from crm.services.profiles import profile_verification_invalidate
from crm.services.sms_keywords import sms_opt_out_keyword


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
    hard_bounce_record(
        profile=profile,
        message_id=message_id,
        occurred_at=occurred_at,
        contact_id=contact_id,
        source_event_id=source_event_id,
    )


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
