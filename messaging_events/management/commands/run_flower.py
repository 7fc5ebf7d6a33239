"""Start Flower on the project's Celery app, behind basic auth, once the workers answer a ping.

Like cookiecutter-django's `start-flower`: wait for `celery inspect ping`, then exec Flower.
Flower loads `-A config`, the same app and Django settings as the workers, so it reads
the same `broker_transport_options` and reports the same Redis queue lengths.
"""

import logging
import os
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.celery_app import app

logger = logging.getLogger(__name__)

LOCAL_BASIC_AUTH = "admin:admin"


def flower_basic_auth() -> str:
    """FLOWER_BASIC_AUTH, required outside local settings (DEBUG); local falls back to admin:admin."""
    value = (settings.FLOWER_BASIC_AUTH or "").strip()
    if value:
        for pair in value.split(","):
            user, sep, password = pair.partition(":")
            if not (user and sep and password):
                raise CommandError("FLOWER_BASIC_AUTH must be user:password (comma-separated for several users).")
        return value
    if settings.DEBUG:
        logger.warning("flower_default_credentials user=admin reason=FLOWER_BASIC_AUTH empty and DEBUG on (local)")
        return LOCAL_BASIC_AUTH
    raise CommandError(
        "FLOWER_BASIC_AUTH is empty: Flower will not start without basic auth outside local settings. "
        "Set FLOWER_BASIC_AUTH=user:password."
    )


def wait_for_workers(timeout_s: float, interval_s: float = 2.0) -> bool:
    """True once a worker answers `inspect ping`, False after `timeout_s` (Flower then starts anyway)."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        try:
            replies = app.control.inspect(timeout=1.0).ping() or {}
        except Exception as exc:  # the broker itself may still be starting
            replies = {}
            logger.info("flower_waiting_for_broker attempt=%d error=%s", attempt, type(exc).__name__)
        if replies:
            logger.info("flower_workers_ready workers=%s", ",".join(sorted(replies)))
            return True
        if time.monotonic() >= deadline:
            return False
        logger.info("flower_waiting_for_workers attempt=%d", attempt)
        time.sleep(interval_s)


class Command(BaseCommand):
    help = "Run Flower (Celery monitor) on 127.0.0.1:$FLOWER_PORT with basic auth from FLOWER_BASIC_AUTH."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("FLOWER_PORT", "5555")))
        parser.add_argument("--address", default="127.0.0.1")
        parser.add_argument(
            "--wait-timeout",
            type=float,
            default=float(os.environ.get("FLOWER_WAIT_TIMEOUT_S", "60")),
            help="Seconds to wait for a worker to answer a ping before starting anyway (0: do not wait).",
        )

    def handle(self, *args, **options) -> None:
        basic_auth = flower_basic_auth()
        if options["wait_timeout"] > 0 and not wait_for_workers(options["wait_timeout"]):
            logger.warning(
                "flower_no_workers waited_s=%.0f starting anyway; workers appear when they start",
                options["wait_timeout"],
            )
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "flower",
            f"--address={options['address']}",
            f"--port={options['port']}",
            f"--basic-auth={basic_auth}",
        ]
        logger.info("flower_starting address=%s port=%d", options["address"], options["port"])
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvp(argv[0], argv)  # noqa: S606 - replaces this process, as `exec` in a shell script
