"""Event text is attacker-controlled: the admin must show it escaped, never as markup."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from crm.models import Activity, ActivityType, AttributionEvent, Profile
from tests.crm.admin.factories import BASE_TIME, make_inbound_event, make_staff, make_tenant

SCRIPT = "<script>alert(1)</script>"
LINK = 'javascript:alert(1)"><img src=x onerror=alert(1)>'
RAW_MARKUP = ("<script>alert(1)", "<img src=x", "onerror=alert(1)>")
ESCAPED = ("&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(1)&gt;")


@pytest.fixture
def hostile(db) -> dict:
    tenant = make_tenant("acme-ext", "Acme Ltd")
    profile = Profile.objects.create(tenant=tenant, first_name="Eve", last_name="Evans", email="eve@acme.example")
    reply_event = make_inbound_event(
        tenant,
        event_type="sms.replied",
        contact_id="c-eve",
        raw_data={"contactId": "c-eve", "replyText": SCRIPT},
        status="failed",
        error=f"internal error: could not handle {SCRIPT}",
    )
    click_event = make_inbound_event(
        tenant, event_type="email.clicked", contact_id="c-eve", raw_data={"contactId": "c-eve", "linkUrl": LINK}
    )
    reply = Activity.objects.create(
        tenant=tenant,
        profile=profile,
        type=ActivityType.SMS_REPLIED,
        occurred_at=BASE_TIME,
        data={"replyText": SCRIPT},
        source_event=reply_event,
    )
    click = Activity.objects.create(
        tenant=tenant,
        profile=profile,
        type=ActivityType.EMAIL_CLICKED,
        occurred_at=BASE_TIME,
        data={"linkUrl": LINK},
        source_event=click_event,
    )
    attribution = AttributionEvent.objects.create(
        tenant=tenant,
        profile=profile,
        campaign_id="spring",
        link_url=LINK,
        occurred_at=BASE_TIME,
        source_event=click_event,
    )
    return {
        "tenant": tenant,
        "profile": profile,
        "reply": reply,
        "click": click,
        "attribution": attribution,
        "reply_event": reply_event,
        "click_event": click_event,
    }


def pages(h: dict) -> list[tuple[str, tuple[str, ...]]]:
    """(url, escaped strings the page must show)."""
    return [
        (reverse("admin:crm_profile_change", args=[h["profile"].pk]), ESCAPED),
        (reverse("admin:crm_activity_changelist"), ESCAPED),
        (reverse("admin:crm_activity_change", args=[h["reply"].pk]), ESCAPED[:1]),
        (reverse("admin:crm_activity_change", args=[h["click"].pk]), ESCAPED[1:]),
        (reverse("admin:crm_attributionevent_changelist"), ESCAPED[1:]),
        (reverse("admin:crm_attributionevent_change", args=[h["attribution"].pk]), ESCAPED[1:]),
        (reverse("admin:messaging_events_inboundevent_changelist"), ESCAPED[:1]),
        (reverse("admin:messaging_events_inboundevent_change", args=[h["reply_event"].pk]), ESCAPED[:1]),
        (reverse("admin:messaging_events_inboundevent_change", args=[h["click_event"].pk]), ESCAPED[1:]),
    ]


def assert_escaped(html: str, expected: tuple[str, ...]) -> None:
    for raw in RAW_MARKUP:
        assert raw not in html, f"unescaped {raw!r} in the page"
    assert 'href="javascript:' not in html
    for escaped in expected:
        assert escaped in html, f"expected the escaped text {escaped!r}"


@pytest.mark.parametrize("who", ["superuser", "staff"])
def test_admin_pages_show_event_text_escaped(hostile: dict, who: str) -> None:
    if who == "superuser":
        user = get_user_model().objects.create_superuser(username="root", password="pw", email="")
    else:
        user = make_staff("staff", [hostile["tenant"]])
    client = Client()
    client.force_login(user)
    for url, expected in pages(hostile):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_escaped(response.content.decode(), expected)


def test_inbox_detail_pretty_prints_raw_data_and_shows_the_error(hostile: dict) -> None:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser(username="root", password="pw", email=""))
    url = reverse("admin:messaging_events_inboundevent_change", args=[hostile["reply_event"].pk])
    html = client.get(url).content.decode()
    assert "&quot;replyText&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in html  # indented JSON
    assert "internal error: could not handle &lt;script&gt;" in html
