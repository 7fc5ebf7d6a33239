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


# The profile's rule fields, with each segment of its tenant and each segment it is a member of
# (normally the same segments), in one round trip; no row when the profile does not exist.
_REFRESH_SQL = f"""
SELECT {", ".join(f"p.{name}" for name in _RULE_FIELDS)}, x.segment_id, x.in_tenant, x.member,
       x.required_consent_channel, x.min_engagement_score, x.require_verified_email
FROM crm_profile p LEFT JOIN (
    SELECT COALESCE(s.id, m.segment_id) AS segment_id, s.id IS NOT NULL AS in_tenant,
           m.segment_id IS NOT NULL AS member,
           s.required_consent_channel, s.min_engagement_score, s.require_verified_email
    FROM (SELECT * FROM crm_segment WHERE tenant_id = %(tenant)s) s
    FULL JOIN (SELECT segment_id FROM crm_segmentmembership WHERE profile_id = %(profile)s) m
        ON m.segment_id = s.id
) x ON true
WHERE p.id = %(profile)s
"""


@transaction.atomic(savepoint=False)
def segment_membership_refresh(*, profile: Profile) -> None:
    """Recompute the segments one profile belongs to, from its current row (not the passed object)."""
    with connection.cursor() as cursor:
        cursor.execute(_REFRESH_SQL, {"tenant": profile.tenant_id, "profile": profile.pk})
        rows = cursor.fetchall()
    if not rows:
        return
    values = dict(zip(_RULE_FIELDS, rows[0][: len(_RULE_FIELDS)], strict=True))
    current: set[int] = set()
    wanted: set[int] = set()
    for segment_id, in_tenant, member, channel, min_score, verified in (row[len(_RULE_FIELDS) :] for row in rows):
        if segment_id is None:
            continue  # the tenant has no segments and the profile is in none
        if member:
            current.add(segment_id)
        segment = Segment(
            pk=segment_id,
            required_consent_channel=channel,
            min_engagement_score=min_score,
            require_verified_email=verified,
        )
        if in_tenant and segment_qualifies(segment=segment, values=values):
            wanted.add(segment_id)
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
