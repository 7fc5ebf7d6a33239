"""Flower runs behind basic auth: started for real, it refuses a request without credentials."""

import base64
import json
import urllib.error
import urllib.request

import pytest
from django.core.management import CommandError, call_command

from messaging_events.management.commands.run_flower import flower_basic_auth
from messaging_events.tasks import apply_event_batch
from tests.processes import Processes, free_port, manage_command, wait_until


def _fetch(url: str, credentials: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)  # noqa: S310 - always http://127.0.0.1
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def _get(url: str, credentials: str | None = None) -> int:
    return _fetch(url, credentials)[0]


def test_refuses_to_start_without_basic_auth_outside_local(settings) -> None:
    settings.FLOWER_BASIC_AUTH = ""
    settings.DEBUG = False
    with pytest.raises(CommandError, match="FLOWER_BASIC_AUTH is empty"):
        call_command("run_flower", "--wait-timeout", "0")


def test_malformed_basic_auth_is_refused(settings) -> None:
    settings.FLOWER_BASIC_AUTH = "just-a-user"
    with pytest.raises(CommandError, match="user:password"):
        flower_basic_auth()


def test_local_settings_default_to_admin_admin(settings) -> None:
    settings.FLOWER_BASIC_AUTH = ""
    settings.DEBUG = True
    assert flower_basic_auth() == "admin:admin"


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_flower_requires_credentials(processes: Processes, broker_redis) -> None:
    port = free_port()
    flower = processes.start(
        "flower",
        manage_command("run_flower", "--port", str(port), "--wait-timeout", "1"),
        {"FLOWER_BASIC_AUTH": "ops:s3cret"},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: _get(url) != 0, 30, message="Flower to listen")
    except AssertionError:
        raise AssertionError(flower.output()[-3000:]) from None

    assert _get(url) == 401
    assert _get(url, "ops:wrong") == 401
    assert _get(url, "ops:s3cret") == 200
    assert _get(f"{url}broker", "ops:s3cret") == 200
    assert _get(f"{url}api/queues/length") == 401

    # Flower reads the workers' broker_transport_options: a message kombu stored under a
    # priority key (`normal\x06\x163`) is counted in `normal`.
    for priority in (None, 5):
        apply_event_batch.apply_async(args=[[]], queue="normal", priority=priority)
    apply_event_batch.apply_async(args=[[]], queue="high")
    code, body = _fetch(f"{url}api/queues/length", "ops:s3cret")
    assert code == 200
    lengths = {q["name"]: q["messages"] for q in json.loads(body)["active_queues"]}
    assert lengths == {"high": 1, "normal": 2, "low": 0}

    output = flower.output()
    assert "flower_waiting_for_workers" in output or "flower_no_workers" in output
    assert "s3cret" not in output  # the password is never logged
