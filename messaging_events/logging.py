"""Structured log lines: `LOG_FORMAT=json` for JSON lines, otherwise `time level logger message`."""

import json
import logging
from datetime import UTC, datetime


class StructuredFormatter(logging.Formatter):
    def __init__(self, fmt: str = "text") -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if self.json:
            return json.dumps(
                {"ts": when, "level": record.levelname, "logger": record.name, "pid": record.process, "msg": message},
                ensure_ascii=False,
            )
        return f"{when} {record.levelname} {record.name} pid={record.process} {message}"
