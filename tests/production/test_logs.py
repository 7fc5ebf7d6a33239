"""Structured logs: fields as JSON keys or key=value text, Celery's loggers included, no personal data."""

import io
import json
import logging
from collections.abc import Iterator

import pytest

from messaging_events.logging import DropCeleryTaskData, formatter
from messaging_events.services import inbox
from tests.messaging_events.samples import contact_job, contact_payloads
from tests.processes import Processes

EMAIL = "john@example.com"
PHONE = "+27821234567"


@pytest.fixture
def rendered() -> Iterator[dict[str, io.StringIO]]:
    """What the messaging_events loggers write, rendered by each of the two formats."""
    streams = {"json": io.StringIO(), "text": io.StringIO()}
    handlers = []
    for name, stream in streams.items():
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter(name))
        handlers.append(handler)
        logging.getLogger("messaging_events").addHandler(handler)
    try:
        yield streams
    finally:
        for handler in handlers:
            logging.getLogger("messaging_events").removeHandler(handler)


def bridged(job: dict) -> dict:
    return {"id": "7", "name": job["name"], "timestamp": 1765699200000, "attemptsMade": 0, "data": job["data"]}


@pytest.mark.django_db(transaction=True)
def test_an_applied_event_logs_queryable_fields(rendered: dict[str, io.StringIO]) -> None:
    inbox.process_job(bridged(contact_job("contact.created", contact_payloads()["contact.created"])))

    line = next(json.loads(raw) for raw in rendered["json"].getvalue().splitlines() if '"event_applied"' in raw)
    assert line["msg"] == "event_applied"
    assert line["level"] == "INFO" and line["logger"] == "messaging_events.services.inbox"
    assert (line["event_type"], line["key"], line["status"], line["tenant"]) == (
        "contact.created",
        "evt_123",
        "applied",
        "tenant_123",
    )
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    text = next(raw for raw in rendered["text"].getvalue().splitlines() if " event_applied " in raw)
    assert "event_type=contact.created key=evt_123 status=applied tenant=tenant_123" in text
    assert EMAIL not in rendered["json"].getvalue() + rendered["text"].getvalue()


@pytest.mark.django_db(transaction=True)
def test_a_handler_bug_quoting_personal_data_reaches_no_log(
    rendered: dict[str, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_handler(event, source_event_id):
        raise ValueError(f"cannot file {event.payload.email} / {event.payload.phoneNumber}")

    monkeypatch.setattr(inbox, "handler_for", lambda event_type: broken_handler)
    status, _ = inbox.process_job(bridged(contact_job("contact.created", contact_payloads()["contact.created"])))

    assert status == "failed"
    for name, stream in rendered.items():
        output = stream.getvalue()
        assert "ValueError" in output and "Traceback" in output, name  # the bug is still visible
        assert EMAIL not in output and PHONE not in output and "27821234567" not in output, (name, output)


def test_celery_task_arguments_are_dropped_from_celery_log_records() -> None:
    record = logging.makeLogRecord(
        {"name": "celery.worker.strategy", "msg": "Task received", "data": {"args": [{"email": EMAIL}]}}
    )
    assert DropCeleryTaskData().filter(record)
    assert EMAIL not in formatter("json").format(record) + formatter("text").format(record)


@pytest.mark.processes
def test_celery_loggers_use_the_json_configuration(processes: Processes) -> None:
    worker = processes.start_worker(concurrency=1, env={"LOG_FORMAT": "json"})
    ready = next(line for line in worker.output().splitlines() if "ready." in line)
    record = json.loads(ready)
    assert record["logger"] == "celery.apps.worker" and record["level"] == "INFO"
