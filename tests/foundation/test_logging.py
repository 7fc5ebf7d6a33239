"""`LOG_FORMAT=json`: every process started with it writes one JSON object per log line."""

import json
import subprocess
import sys

from tests.processes import ROOT, subprocess_env

LOG_SOMETHING = (
    "import logging\n"
    "log = logging.getLogger('messaging_events.services.inbox')\n"
    "log.warning('event_parked key=%s reason=%s', 'k-1', 'contact \"c\" is not known yet')\n"
    "try:\n"
    "    raise ValueError('boom')\n"
    "except ValueError:\n"
    "    log.exception('event_failed key=%s', 'k-2')\n"
)


def _log_lines(log_format: str) -> list[str]:
    env = subprocess_env({"LOG_FORMAT": log_format, "LOG_LEVEL": "INFO"})
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", LOG_SOMETHING],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stderr.strip().splitlines()


def test_json_log_format_gives_one_json_object_per_line(db) -> None:
    lines = _log_lines("json")
    records = [json.loads(line) for line in lines]  # every line parses: the traceback is a field of its record
    assert len(records) == 2
    parked, failed = records
    assert set(parked) == {"ts", "level", "logger", "pid", "msg"}
    assert (parked["level"], parked["logger"]) == ("WARNING", "messaging_events.services.inbox")
    assert parked["msg"] == 'event_parked key=k-1 reason=contact "c" is not known yet'
    assert parked["ts"].endswith("+00:00") and isinstance(parked["pid"], int)
    assert (failed["level"], failed["msg"]) == ("ERROR", "event_failed key=k-2")
    assert failed["exc_info"].startswith("Traceback") and failed["exc_info"].endswith("ValueError: boom")


def test_text_log_format_is_the_default_line(db) -> None:
    lines = _log_lines("text")
    assert lines[0].split(" ", 3)[1:3] == ["WARNING", "messaging_events.services.inbox"]
    assert lines[0].endswith('event_parked key=k-1 reason=contact "c" is not known yet')
    assert not lines[0].startswith("{")
