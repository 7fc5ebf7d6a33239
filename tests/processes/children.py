"""The `processes` fixture: real bridges, workers and beat for one test, on the test stack.

Each child is a `harness.process.ManagedProcess` (its own process group, a log file, a ready line),
started with the Procfile's argv (`harness.procfile`) and the environment of `subprocess_env`: the
test's servers and pytest-django's `test_<name>` database.
"""

import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from harness.process import ManagedProcess, child_env
from harness.procfile import beat_command, bridge_command, worker_command

# Settings that keep process tests fast; a test may override or drop them.
TEST_BRIDGE_ENV: dict[str, str] = {
    "BRIDGE_LINGER_MS": "5",
    "BULLMQ_LOCK_DURATION_MS": "5000",
    "BULLMQ_STALLED_INTERVAL_MS": "2000",
    "BRIDGE_STATS_INTERVAL_S": "2",
    "BRIDGE_SHUTDOWN_TIMEOUT_S": "10",
    "BRIDGE_PUBLISH_RETRY_MAX_S": "1",
}


def child_database_url() -> str:
    """The URL of the database the test process is using (pytest-django's `test_<name>`)."""
    db = connection.settings_dict
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{db['NAME']}"


def subprocess_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: the test stack's servers, the test database, plus `overrides`."""
    stack = {
        "DATABASE_URL": child_database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "BULLMQ_REDIS_URL": settings.BULLMQ_REDIS_URL,
        "BULLMQ_QUEUE": settings.BULLMQ_QUEUE,
        "BULLMQ_PREFIX": settings.BULLMQ_PREFIX,
    }
    return child_env({**stack, **(overrides or {})})


class Processes:
    """Starts bridges, workers, beat and commands for one test; `kill_all()` (run by the fixture) ends them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.started: list[ManagedProcess] = []
        self._names: dict[str, int] = {}

    def _unique(self, name: str) -> str:
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        return name if n == 0 else f"{name}-{n}"

    def start(
        self, name: str, args: list[str], env: Mapping[str, str] | None = None, *, ready_marker: str | None = None
    ) -> ManagedProcess:
        name = self._unique(name)
        proc = ManagedProcess(name, args, subprocess_env(env), self.log_dir / f"{name}.log", ready_marker=ready_marker)
        self.started.append(proc)
        return proc

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every process started with `wait=False` has logged that it is ready.

        Starting a test's bridge, workers and beat with `wait=False` and then calling this overlaps
        their start-up (a few seconds of imports each) instead of paying for them one after another;
        each is still ready before the test goes on, exactly as with `wait=True`.
        """
        deadline = time.monotonic() + timeout
        for proc in self.started:
            proc.wait_ready(max(0.1, deadline - time.monotonic()))

    def start_bridge(
        self,
        name: str = "bridge",
        *,
        env: Mapping[str, str] | None = None,
        defaults: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        wait: bool = True,
        timeout: float = 30.0,
    ) -> ManagedProcess:
        """The Procfile's bridge. `defaults` (TEST_BRIDGE_ENV unless given) then `env` apply.

        With `wait`, returns once the bridge logged `bridge_started` (its Worker is consuming).
        """
        merged = {**(TEST_BRIDGE_ENV if defaults is None else defaults), **(env or {})}
        proc = self.start(name, bridge_command(*args), merged, ready_marker="bridge_started")
        if wait:
            proc.wait_ready(timeout)
        return proc

    def start_worker(
        self,
        name: str = "worker",
        *,
        concurrency: int = 2,
        queues: str | None = None,
        pool: str = "prefork",
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        timeout: float = 45.0,
    ) -> ManagedProcess:
        """The Procfile's worker with `-c N -P pool` and a node name of its own. With `wait`, returns once ready."""
        argv = worker_command(concurrency=concurrency, queues=queues, pool=pool, hostname=unique_node_name())
        proc = self.start(name, argv, env, ready_marker=" ready.")
        if wait:
            proc.wait_ready(timeout)
        return proc

    def start_beat(
        self,
        name: str = "beat",
        *,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        timeout: float = 45.0,
    ) -> ManagedProcess:
        """The Procfile's beat: the production schedule (parked-event sweep, score refresh).

        Give short `PARKED_SWEEP_INTERVAL_S` / `ENGAGEMENT_SWEEP_INTERVAL_S` in `env` to see it act
        within a test. With `wait`, returns once beat is running its schedule.
        """
        schedule = self.log_dir / f"beat-schedule-{uuid.uuid4().hex[:8]}"
        proc = self.start(name, beat_command(schedule), env, ready_marker="beat: Starting")
        if wait:
            proc.wait_ready(timeout)
        return proc

    def kill_all(self) -> None:
        """SIGKILL every child's process group at once. The teardown proves nothing about shutdown (the
        tests that do stop their processes themselves), so it does not wait for graceful exits."""
        for proc in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.started:
            proc.kill()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} ({p.log_path}) =====\n{p.tail(80)}" for p in self.started)


def unique_node_name() -> str:
    """A Celery node name no other worker of the test has (two nodes of one name share a pidbox)."""
    return f"test-{uuid.uuid4().hex[:8]}@%h"


@pytest.fixture
def processes(
    request: pytest.FixtureRequest, tmp_path: Path, transactional_db: None, broker_redis, bullmq_redis
) -> Iterator[Processes]:
    """A `Processes` for the test; every child is killed at teardown, before the database is flushed."""
    procs = Processes(tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.kill_all()
        # pytest shows a test's captured teardown output only when it fails.
        if procs.started:
            sys.stderr.write(f"\n--- process logs for {request.node.nodeid} ---\n{procs.logs()}\n")
