"""Segment membership: a profile is a member when it meets every rule its segment sets.

Rules: the required consent channel is opted in (`True`, not unknown), the engagement score is at
least the minimum, and — when required — `email_verified is True`. Membership is recomputed when a
profile's consent, verification or score changes, and rebuilt for a whole segment on demand.
"""

from django.db import connection, transaction
from django.db.models import Q, QuerySet

from crm.models import Profile, Segment, SegmentMembership

_RULE_FIELDS = (
    "tenant_id",
    "email_opt_in",
    "sms_opt_in",
    "push_opt_in",
    "whatsapp_opt_in",
    "engagement_score",
    "email_verified",
)


def segment_qualifies(*, segment: Segment, values: dict) -> bool:
    """Whether a profile (its rule fields, as in `_RULE_FIELDS`) meets the segment's rules."""
    channel = segment.required_consent_channel
    if channel and values.get(f"{channel}_opt_in") is not True:
        return False
    if segment.min_engagement_score is not None and (values.get("engagement_score") or 0.0) < (
        segment.min_engagement_score
    ):
        return False
    return not (segment.require_verified_email and values.get("email_verified") is not True)


@transaction.atomic(savepoint=False)
def segment_membership_refresh(*, profile: Profile) -> None:
    """Recompute the segments one profile belongs to, from its current row (not the passed object)."""
    segments = list(Segment.objects.filter(tenant_id=profile.tenant_id))
    current = set(SegmentMembership.objects.filter(profile_id=profile.pk).values_list("segment_id", flat=True))
    if not segments and not current:
        return
    values = Profile.objects.filter(pk=profile.pk).values(*_RULE_FIELDS).first()
    if values is None:
        return
    wanted = {segment.pk for segment in segments if segment_qualifies(segment=segment, values=values)}
    if current - wanted:
        SegmentMembership.objects.filter(profile_id=profile.pk, segment_id__in=current - wanted).delete()
    if wanted - current:
        SegmentMembership.objects.bulk_create(
            [
                SegmentMembership(tenant_id=values["tenant_id"], segment_id=segment_id, profile_id=profile.pk)
                for segment_id in sorted(wanted - current)
            ],
            ignore_conflicts=True,
        )


def segment_members_queryset(*, segment: Segment) -> QuerySet[Profile]:
    """The profiles that meet the segment's rules (a selector)."""
    profiles = Profile.objects.filter(tenant_id=segment.tenant_id)
    if segment.required_consent_channel:
        profiles = profiles.filter(Q(**{f"{segment.required_consent_channel}_opt_in": True}))
    if segment.min_engagement_score is not None:
        profiles = profiles.filter(engagement_score__gte=segment.min_engagement_score)
    if segment.require_verified_email:
        profiles = profiles.filter(email_verified=True)
    return profiles


@transaction.atomic(savepoint=False)
def segment_rebuild(*, segment: Segment) -> int:
    """Make the segment's members exactly the profiles that meet its rules. Returns the member count."""
    members = segment_members_queryset(segment=segment)
    SegmentMembership.objects.filter(segment=segment).exclude(profile_id__in=members.values("pk")).delete()
    segment_members_add(segment=segment, members=members)
    return SegmentMembership.objects.filter(segment=segment).count()


def segment_members_add(*, segment: Segment, members: QuerySet[Profile]) -> None:
    """Add these profiles (a subset of `segment_members_queryset`) to the segment, in one statement."""
    sql, params = members.values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_segmentmembership (tenant_id, segment_id, profile_id, added_at) "
            f"SELECT %s, %s, q.profile_id, now() FROM ({sql}) AS q (profile_id) "
            "ON CONFLICT (segment_id, profile_id) DO NOTHING",
            [segment.tenant_id, segment.pk, *params],
        )
