"""Click attribution: a click carrying a campaign id or any `utm_*` parameter is attributed."""

from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from crm.models import AttributionEvent

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


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
