"""The admin in a real browser: Playwright for Python driving Debian's /usr/bin/chromium (no browser download).

A tenant's staff member logs in and opens the pipeline page, a profile and the rejected-event list
at 1280 px. Each page must show its key content, lay the inbox's Error column inside the viewport,
and log no console error. Few tests on purpose: each starts a browser.
"""

import hashlib
import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from messaging_events.models import InboundEvent
from tests.crm.admin.conftest import World
from tests.crm.admin.factories import make_inbound_event

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}
LONG_ERROR = "email: value is not a valid email address: the part after the @-sign is not valid. " * 3


def record_console_error(page: Page, message: ConsoleMessage) -> None:
    # Chromium asks every site for /favicon.ico; the admin has none, and that 404 is not the page's.
    if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
        page.console_errors.append(f"{message.text} ({message.location.get('url')})")


@pytest.fixture
def browser(monkeypatch) -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread; the live server's ORM calls run in another.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, live_server, transactional_db, world: World) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, base_url=live_server.url)
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda message: record_console_error(page, message))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    page.goto("/admin/login/")
    page.fill("#id_username", world.staff_a.username)
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_selector("#pipeline-link")
    yield page
    context.close()


def test_pipeline_page_and_rejected_list(page: Page, world: World) -> None:
    assert os.path.exists(CHROMIUM)
    rejected = make_inbound_event(
        world.tenant_a, status="rejected", event_type="contact.created", contact_id="c-rej", error=LONG_ERROR
    )
    # Real keys are sha256 hex: 64 characters without a break, the width that once pushed Error off screen.
    InboundEvent.objects.filter(pk=rejected.pk).update(idempotency_key=hashlib.sha256(b"key").hexdigest())

    page.click("#pipeline-link a")
    page.wait_for_selector("#verdict")
    assert page.locator("h1").inner_text() == "Pipeline health"
    assert page.locator("#verdict .verdict").is_visible()
    assert page.locator("#outcomes svg rect").count() >= 1
    assert page.locator("#rejections").get_by_text("email: value is not a valid").is_visible()

    page.locator("#rejections td.reason a").first.click()
    page.wait_for_selector("#result_list")
    # Within the viewport, and not clipped by the list's own scrolling box either; wide enough to read.
    box = page.locator("#result_list th.column-error_preview").bounding_box()
    results = page.locator("#changelist .results").bounding_box()
    assert box is not None and results is not None
    assert box["x"] + box["width"] <= min(VIEWPORT["width"], results["x"] + results["width"]), (box, results)
    assert box["width"] >= 250, box
    assert page.evaluate("document.querySelector('#changelist .results').scrollWidth") <= results["width"] + 1
    cell = page.locator("#result_list td.field-error_preview span")
    assert cell.is_visible()
    assert cell.get_attribute("title") == rejected.error
    assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
    assert page.console_errors == []


def test_profile_list_and_page(page: Page, world: World) -> None:
    page.goto("/admin/crm/profile/")
    page.wait_for_selector("#result_list")
    last_column = page.locator("#result_list thead th").last.bounding_box()
    results = page.locator("#changelist .results").bounding_box()
    assert last_column is not None and results is not None
    assert last_column["x"] + last_column["width"] <= min(VIEWPORT["width"], results["x"] + results["width"])
    assert page.locator("#result_list td.field-consent_summary").first.inner_text() == "email ✓ sms ?"

    page.goto(f"/admin/crm/profile/{world.alice.pk}/change/")
    page.wait_for_selector("#content-main")
    assert page.get_by_text("alice@acme.example").first.is_visible()
    consent = page.locator(".field-consent_state")
    assert consent.get_by_text("opted in").first.is_visible()
    assert "ago" in consent.inner_text()
    breakdown = page.locator(".field-engagement_breakdown_table")
    assert breakdown.get_by_text("EMAIL_OPENED:").is_visible()
    assert page.console_errors == []
