"""Thin Celery tasks for the CRM: they call one service and own only scheduling policy."""

import logging

from celery import shared_task

logger = logging.getLogger(__name__)

DRAIN_BATCH = 200
# A drain task holds a pool child: ten batches (about a second under load) keep a `high` batch from waiting
# long behind it; a full run queues the next one at once.
DRAIN_MAX_BATCHES = 10


@shared_task(name="crm.refresh_pending_engagement_scores", queue="low", ignore_result=True)
def refresh_pending_engagement_scores() -> int:
    """Recompute the engagement scores of the profiles awaiting one (coalesced by PendingScoreRefresh).

    Scheduled after engagement events (at most once per ENGAGEMENT_REFRESH_DELAY_S) and by beat.
    When the backlog is larger than one run's share, it queues itself again at once.
    """
    # In the body: the service imports this module to queue the task (one direction, no cycle).
    from crm.services.engagement import engagement_pending_drain

    refreshed = engagement_pending_drain(batch_size=DRAIN_BATCH, max_batches=DRAIN_MAX_BATCHES)
    if refreshed >= DRAIN_BATCH * DRAIN_MAX_BATCHES:
        refresh_pending_engagement_scores.apply_async(queue="low")
    logger.info("engagement_scores_refreshed count=%d", refreshed)
    return refreshed
