"""Segment membership: a profile is a member when it meets every rule its segment sets.

Rules: the required consent channel is opted in (`True`, not unknown), the engagement score is at
least the minimum, and — when required — `email_verified is True`. Membership is recomputed when a
profile's consent, verification or score changes, and rebuilt for a whole segment on demand.
"""

from django.db import connection, transaction
from django.db.models import Q, QuerySet

from crm.models import Channel, Profile, Segment, SegmentMembership
from crm.services.prepared import prepared_cursor

# What a profile's memberships depend on: its id, tenant and these rule fields.
SEGMENT_RULE_COLUMNS = (
    "id",
    "tenant_id",
    *(f"{channel}_opt_in" for channel in Channel.values),
    "engagement_score",
    "email_verified",
)
# Profile `p` meets segment `s`'s rules (module doc): the channel's flag is true, not unknown.
_QUALIFIES_SQL = f"""(s.required_consent_channel = ''
        OR (CASE s.required_consent_channel {" ".join(f"WHEN '{c}' THEN p.{c}_opt_in" for c in Channel.values)} END)
           IS TRUE)
    AND (s.min_engagement_score IS NULL OR COALESCE(p.engagement_score, 0) >= s.min_engagement_score)
    AND (NOT s.require_verified_email OR p.email_verified IS TRUE)"""


def segment_membership_refresh_ctes(profiles: str) -> str:
    """Two data-modifying CTEs (`segments_left`, `segments_joined`) that make the memberships of the rows
    of the relation `profiles` (`SEGMENT_RULE_COLUMNS`, as they are to be judged: an `UPDATE … RETURNING`
    gives the updated values) exactly the segments of their tenant whose rules they meet. They read the
    memberships as the statement's snapshot has them: neither sees the other's rows, and the sets are
    disjoint. An existing membership is never inserted again (its id and `added_at` stay)."""
    return f"""segments_left AS (
    DELETE FROM crm_segmentmembership m USING {profiles} p
    WHERE m.profile_id = p.id AND NOT EXISTS (
        SELECT 1 FROM crm_segment s WHERE s.id = m.segment_id AND s.tenant_id = p.tenant_id AND {_QUALIFIES_SQL})
),
segments_joined AS (
    INSERT INTO crm_segmentmembership (tenant_id, segment_id, profile_id, added_at)
    SELECT p.tenant_id, s.id, p.id, now() FROM {profiles} p JOIN crm_segment s ON s.tenant_id = p.tenant_id
    WHERE {_QUALIFIES_SQL}
        AND NOT EXISTS (SELECT 1 FROM crm_segmentmembership m WHERE m.segment_id = s.id AND m.profile_id = p.id)
    ORDER BY p.id, s.id
    ON CONFLICT (segment_id, profile_id) DO NOTHING
)"""


_REFRESH_SQL = f"""
WITH refreshed AS (SELECT {", ".join(SEGMENT_RULE_COLUMNS)} FROM crm_profile WHERE id = %s),
{segment_membership_refresh_ctes("refreshed")}
SELECT 1
"""


def segment_membership_refresh(*, profile: Profile) -> None:
    """Recompute the segments one profile belongs to, from its current row (not the passed object), in
    one statement."""
    with prepared_cursor() as cursor:
        cursor.execute(_REFRESH_SQL, [profile.pk])


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
