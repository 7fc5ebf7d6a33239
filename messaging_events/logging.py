"""Log rendering: `LOG_FORMAT=json` for one JSON object per line, otherwise readable `key=value` text.

Log calls name the event in the message and carry their fields in `extra`
(`logger.info("event_applied", extra={"event_type": ..., "key": ...})`). The JSON renderer is
python-json-logger's, which puts every `extra` field at the top level so each can be queried;
the text renderer appends them as `key=value`. Fields are ids, types, counts and durations:
emails and phone numbers never reach a log.
"""

import logging
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from messaging_events.redaction import redact

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

# Every attribute a bare LogRecord has, plus what Formatter.format adds: anything else came from `extra`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRS}


def _text_value(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


class TextFormatter(logging.Formatter):
    """`time LEVEL logger pid=N message key=value …`."""

    def formatException(self, ei) -> str:
        # A traceback ends with the exception's message, which may quote an event's email or phone.
        return redact(super().formatException(ei))

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        fields = " ".join(f"{key}={_text_value(value)}" for key, value in extra_fields(record).items())
        line = f"{when} {record.levelname} {record.name} pid={record.process} {record.getMessage()}"
        if fields:
            line = f"{line} {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class DropCeleryTaskData(logging.Filter):
    """Celery logs each task's arguments and return value as `extra={"data": …}`: its message already says
    which task did what, and the arguments are events, with their emails and phone numbers."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("celery") and "data" in vars(record):
            del vars(record)["data"]  # an `extra` field: an instance attribute LogRecord does not declare
        return True


class _JsonFormatter(JsonFormatter):
    def formatException(self, ei: ExcInfo) -> str:
        # The traceback as one text, as JsonFormatter gives it with `exc_info_as_array` off (ours is).
        return redact(logging.Formatter.formatException(self, ei))


def json_formatter() -> JsonFormatter:
    return _JsonFormatter(
        "%(levelname)s %(name)s %(process)d %(message)s",
        rename_fields={"levelname": "level", "name": "logger", "process": "pid", "message": "msg"},
        timestamp="ts",
        json_ensure_ascii=False,
    )


def formatter(fmt: str = "text") -> logging.Formatter:
    """The formatter for LOG_FORMAT (`json` or `text`); used by Django's LOGGING and Celery's setup_logging."""
    return json_formatter() if fmt == "json" else TextFormatter()
