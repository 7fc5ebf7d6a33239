"""Merging a stub profile into the real profile its contact turned out to be.

A stub is created when a consent or contact update names an unknown contact, so that an opt-out is
never delayed. When `contact.created` then resolves that contact by email or phone to another
profile, everything the stub holds moves over and the stub is deleted:

- contact links, activities, campaign interactions, attributions and hard bounces move;
- the consent ledger moves, then each channel's `MarketingConsent`, profile flag and consent
  activities are recomputed from the merged ledger (a moved row keeps its `superseded` flag, which
  describes its arrival);
- identity fields merge under the provenance rule (staff first, then the earliest event);
  verification flags by the latest statement; `last_*` timestamps by the greatest;
- bounce automation runs over the merged hard bounces; the score is recomputed;
- one `PROFILE_MERGED` activity is written on the target; segment membership is recomputed.
"""

from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from crm.models import (
    Activity,
    ActivityType,
    AttributionEvent,
    CampaignInteraction,
    ContactLink,
    MarketingConsent,
    PendingScoreRefresh,
    Profile,
    SegmentMembership,
)
from crm.services.bounces import hard_bounce_automation_apply
from crm.services.consent_rebuild import consent_state_recompute
from crm.services.engagement import engagement_scores_refresh
from crm.services.locks import profile_lock_get
from crm.services.profiles import profile_merge_fields
from crm.services.segments import segment_membership_refresh

TIMESTAMP_FIELDS = ("last_message_at", "last_activity_at", "last_email_open_at")

_MOVE_LEDGER_SQL = """
UPDATE crm_consentchange c SET profile_id = %(target)s
WHERE c.profile_id = %(source)s AND NOT EXISTS (
    SELECT 1 FROM crm_consentchange t
    WHERE t.profile_id = %(target)s AND t.channel = c.channel AND t.tiebreak = c.tiebreak
)
"""

_MOVE_BOUNCES_SQL = """
UPDATE crm_hardbounce b SET profile_id = %(target)s
WHERE b.profile_id = %(source)s AND NOT EXISTS (
    SELECT 1 FROM crm_hardbounce t WHERE t.profile_id = %(target)s AND t.message_id = b.message_id
)
"""


@transaction.atomic(savepoint=False)
def profile_merge(
    *, source: Profile, target: Profile, occurred_at: datetime, source_event_id: int | None, reason: str
) -> Profile:
    """Merge `source` (a stub) into `target`; returns the refreshed target."""
    # The pending-refresh row first, before any profile lock (a drain locks it, then the profile).
    PendingScoreRefresh.objects.filter(profile_id=source.pk).delete()
    fresh = {pk: profile_lock_get(pk) for pk in sorted((source.pk, target.pk))}  # in id order
    source, target = fresh[source.pk], fresh[target.pk]

    contact_ids = sorted(ContactLink.objects.filter(profile=source).values_list("messaging_contact_id", flat=True))
    params = {"source": source.pk, "target": target.pk}
    moved = {
        "contact_links": ContactLink.objects.filter(profile=source).update(profile=target),
        "activities": Activity.objects.filter(profile=source).update(profile=target),
        "interactions": CampaignInteraction.objects.filter(profile=source).update(profile=target),
        "attributions": AttributionEvent.objects.filter(profile=source).update(profile=target),
    }
    with connection.cursor() as cursor:
        cursor.execute(_MOVE_LEDGER_SQL, params)
        moved["consent_changes"] = cursor.rowcount
        cursor.execute(_MOVE_BOUNCES_SQL, params)
        moved["hard_bounces"] = cursor.rowcount
    MarketingConsent.objects.filter(profile=source).delete()
    SegmentMembership.objects.filter(profile=source).delete()

    updates = profile_merge_fields(source=source, target=target)
    for field in TIMESTAMP_FIELDS:
        theirs, ours = getattr(source, field), getattr(target, field)
        if theirs is not None and (ours is None or theirs > ours):
            updates[field] = theirs
    updates["is_stub"] = False
    updates["updated_at"] = timezone.now()
    Profile.objects.filter(pk=target.pk).update(**updates)
    source_pk = source.pk
    source.delete()  # what did not move (duplicates of the target's rows) goes with it
    target.refresh_from_db()

    Activity.objects.create(
        tenant_id=target.tenant_id,
        profile_id=target.pk,
        type=ActivityType.PROFILE_MERGED,
        occurred_at=occurred_at,
        data={"merged_profile_id": source_pk, "contact_ids": contact_ids, "moved": moved, "reason": reason},
        source_event_id=source_event_id,
    )
    consent_state_recompute(profile=target)
    hard_bounce_automation_apply(profile=target, around=None, source_event_id=source_event_id)
    engagement_scores_refresh(profile_ids=[target.pk])
    target.refresh_from_db()
    segment_membership_refresh(profile=target)
    return target
