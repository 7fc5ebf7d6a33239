"""Engagement score: how much a person engaged lately, from 0 to 100.

Formula (also in docs/engagement.md)::

    score = min(100, sum over engagement activities a of  weight(a.type) * 0.5 ** (age_days(a) / H))

- weights: EMAIL_OPENED 5, EMAIL_CLICKED 15, SMS_REPLIED 25 points (other activities: 0)
- age_days: days between the activity's occurred-at and the computation time (never negative)
- H: `settings.ENGAGEMENT_HALF_LIFE_DAYS` (default 30): a point is worth half as much after H days
- the score is rounded to 4 decimals (sums of floats are otherwise order-dependent in the last bits)

It is computed in SQL from the activities (one grouped query) and stored with a breakdown (per
type: count, weight and points; half-life; uncapped total; computed-at) that the admin shows.

Coalescing: an engagement event calls `engagement_refresh_request`, which upserts one
`PendingScoreRefresh` row per profile in the event's transaction and, after commit, schedules
`crm.refresh_pending_engagement_scores` with a countdown of `ENGAGEMENT_REFRESH_DELAY_S`, at most
once per delay window (a Redis `SET NX PX` on the broker, plus a per-process memo). The task drains
the rows in batches (`SELECT ... FOR UPDATE SKIP LOCKED`), recomputes and deletes them in one
transaction; the beat schedule runs it too, as a safety net. So many events for a profile cause one
recomputation soon after: never one per event, never none.

The upsert is `ON CONFLICT DO UPDATE` (a no-op update), not `DO NOTHING`, on purpose: it locks the
row until the event commits, so a drain running meanwhile skips it instead of consuming it before the
event's activity is visible (which would lose that refresh). Events take this lock before any other
profile lock, so drains and events cannot deadlock.
"""

import logging
import time
from datetime import datetime

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from crm.models import ActivityType, PendingScoreRefresh, Profile
from crm.services.prepared import prepared_cursor
from crm.services.recordsets import recordset_json
from crm.services.segments import SEGMENT_RULE_COLUMNS, segment_membership_refresh_ctes
from crm.tasks import refresh_pending_engagement_scores as refresh_pending_engagement_scores_task

logger = logging.getLogger(__name__)

WEIGHTS: dict[str, float] = {
    ActivityType.EMAIL_OPENED: 5.0,
    ActivityType.EMAIL_CLICKED: 15.0,
    ActivityType.SMS_REPLIED: 25.0,
}
MAX_SCORE = 100.0
SCORE_DECIMALS = 4
SCHEDULE_KEY = "crm:engagement-refresh:scheduled"
DRAIN_BATCH = 200

_SCORE_SQL = """
SELECT profile_id, type, count(*),
       sum(power(0.5::float8,
                 (GREATEST(0, EXTRACT(EPOCH FROM (%s::timestamptz - occurred_at))) / %s)::float8))
FROM crm_activity
WHERE profile_id = ANY(%s) AND type = ANY(%s)
GROUP BY profile_id, type
"""

_REQUEST_SQL = """
INSERT INTO crm_pendingscorerefresh (profile_id, requested_at) VALUES (%s, now())
ON CONFLICT (profile_id) DO UPDATE SET requested_at = crm_pendingscorerefresh.requested_at
"""

_REQUEST_MANY_SQL = """
INSERT INTO crm_pendingscorerefresh (profile_id, requested_at)
SELECT id, now() FROM unnest(%s::bigint[]) AS id ORDER BY id
ON CONFLICT (profile_id) DO UPDATE SET requested_at = crm_pendingscorerefresh.requested_at
"""

_redis_client: redis.Redis | None = None
_scheduled_until = 0.0  # this process scheduled a drain that covers events until this monotonic time


def _redis() -> redis.Redis:
    global _redis_client
    if _redis_client is None:
        _redis_client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2, socket_connect_timeout=2)
    return _redis_client


def engagement_scores_compute(*, profile_ids: list[int], now: datetime) -> dict[int, tuple[float, dict]]:
    """Score and breakdown of each profile at `now` (a selector: it writes nothing)."""
    half_life_days = float(settings.ENGAGEMENT_HALF_LIFE_DAYS)
    types: dict[int, dict[str, dict]] = {pk: {} for pk in profile_ids}
    if profile_ids:
        with connection.cursor() as cursor:
            cursor.execute(_SCORE_SQL, [now, half_life_days * 86400.0, list(profile_ids), list(WEIGHTS)])
            for profile_id, activity_type, count, decayed in cursor.fetchall():
                weight = WEIGHTS[activity_type]
                types[profile_id][activity_type] = {
                    "count": count,
                    "weight": weight,
                    "points": round(weight * float(decayed or 0.0), SCORE_DECIMALS),
                }
    result = {}
    for profile_id, per_type in types.items():
        total = round(sum(item["points"] for item in per_type.values()), SCORE_DECIMALS)
        score = round(min(MAX_SCORE, total), SCORE_DECIMALS)
        breakdown = {
            "score": score,
            "uncapped_total": total,
            "cap": MAX_SCORE,
            "half_life_days": half_life_days,
            "computed_at": now.isoformat(),
            "types": {name: per_type[name] for name in sorted(per_type)},
        }
        result[profile_id] = (score, breakdown)
    return result


# The scores of a drain batch in one statement, and the segment memberships of the profiles whose score
# changed (`segments.segment_membership_refresh_ctes` judges the updated rows).
_STORE_SQL = f"""
WITH scored AS (
    UPDATE crm_profile p SET engagement_score = v.score, engagement_breakdown = v.breakdown, engagement_scored_at = %s
    FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, score float8, breakdown jsonb, changed boolean)
    WHERE p.id = v.id
    RETURNING {", ".join(f"p.{column}" for column in SEGMENT_RULE_COLUMNS)}, v.changed
),
rescored AS (SELECT * FROM scored WHERE changed),
{segment_membership_refresh_ctes("rescored")}
SELECT count(*) FROM scored
"""


@transaction.atomic(savepoint=False)
def engagement_scores_refresh(*, profile_ids: list[int], now: datetime | None = None) -> dict[int, float]:
    """Recompute and store the scores of these profiles; recompute segment membership where a score changed.
    Three statements whatever the count: the profiles locked and read in id order (as every profile writer
    locks them), their scores computed, then stored with the memberships of the changed ones."""
    now = now or timezone.now()
    locked = Profile.objects.select_for_update(no_key=True).filter(pk__in=profile_ids).order_by("pk")
    before = dict(locked.values_list("pk", "engagement_score"))
    computed = engagement_scores_compute(profile_ids=sorted(before), now=now)
    rows = [
        {"id": pk, "score": score, "breakdown": breakdown, "changed": before[pk] != score}
        for pk, (score, breakdown) in sorted(computed.items())
    ]
    if rows:
        with prepared_cursor() as cursor:
            cursor.execute(_STORE_SQL, [now, recordset_json(rows)])
    return {pk: score for pk, (score, _) in computed.items()}


def engagement_score_refresh(*, profile: Profile, now: datetime | None = None) -> float:
    """Recompute one profile's score and breakdown now (and its segment membership if the score changed)."""
    now = now or timezone.now()
    scores = engagement_scores_refresh(profile_ids=[profile.pk], now=now)
    score = scores.get(profile.pk, 0.0)
    fresh = Profile.objects.filter(pk=profile.pk).values("engagement_breakdown").first()
    profile.engagement_score = score
    profile.engagement_breakdown = fresh["engagement_breakdown"] if fresh is not None else {}
    profile.engagement_scored_at = now
    return score


def engagement_refresh_request(*, profile_id: int) -> None:
    """Ask for a recomputation soon (coalesced). Call inside the event's transaction, before other profile writes."""
    with connection.cursor() as cursor:
        cursor.execute(_REQUEST_SQL, [profile_id])
    transaction.on_commit(engagement_refresh_schedule)


def engagement_refresh_request_many(*, profile_ids: list[int]) -> None:
    """`engagement_refresh_request` for many profiles in one statement, locking their rows in id order."""
    if not profile_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(_REQUEST_MANY_SQL, [sorted(set(profile_ids))])
    transaction.on_commit(engagement_refresh_schedule)


def engagement_refresh_schedule() -> None:
    """Schedule one drain after the delay, unless one is already scheduled for this window."""
    global _scheduled_until
    delay = float(settings.ENGAGEMENT_REFRESH_DELAY_S)
    if time.monotonic() < _scheduled_until:
        return
    try:
        if _redis().set(SCHEDULE_KEY, "1", nx=True, px=max(1, int(delay * 1000))):
            refresh_pending_engagement_scores_task.apply_async(countdown=delay, queue="low")
            _scheduled_until = time.monotonic() + delay
    except Exception as exc:  # the beat schedule drains the rows anyway
        logger.warning("engagement_refresh_schedule_failed error=%s", type(exc).__name__)


def engagement_pending_drain(*, batch_size: int = DRAIN_BATCH, max_batches: int | None = None) -> int:
    """Recompute the scores of every profile awaiting one, batch by batch. Returns how many were refreshed.

    Each batch locks its rows with SKIP LOCKED (concurrent drains share the work), recomputes and
    deletes them in one transaction: a crash leaves them for the next drain.
    """
    try:
        # From here on, a new event schedules a new drain: this one may have read past it.
        _redis().delete(SCHEDULE_KEY)
    except Exception as exc:
        logger.warning("engagement_refresh_unschedule_failed error=%s", type(exc).__name__)
    refreshed = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        with transaction.atomic():
            ids = list(
                PendingScoreRefresh.objects.select_for_update(skip_locked=True)
                .order_by("requested_at", "profile_id")
                .values_list("profile_id", flat=True)[:batch_size]
            )
            if not ids:
                break
            engagement_scores_refresh(profile_ids=ids, now=timezone.now())
            PendingScoreRefresh.objects.filter(profile_id__in=ids).delete()
        refreshed += len(ids)
        batches += 1
    return refreshed
