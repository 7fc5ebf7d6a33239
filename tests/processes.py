"""A harness for tests that run the real bridge and real Celery workers as subprocesses.

Use it from a test that has the `processes` fixture (registered in tests/conftest.py via
`pytest_plugins`, or imported from here), which gives a `Processes` object and always kills
every child at teardown (SIGKILL of each whole process group; a test that proves a clean
shutdown stops its processes itself with `stop()`):

    @pytest.mark.processes
    def test_something(processes: Processes) -> None:
        bridge = processes.start_bridge(env={"BRIDGE_BATCH_SIZE": "1"})
        worker = processes.start_worker(concurrency=2)
        publish_jobs([{"name": "contact.created", "data": {"payload": {...}}}])
        wait_for_quiescence(timeout=30)
        assert bridge.stop() == 0

The fixture uses `transactional_db` (rows written by the children are visible to the test, and
the children are given the pytest-django `test_<name>` database) and empties both Redis
databases (the Celery broker's and BullMQ's) before the test.

To overlap start-ups, start with `wait=False` and then call `processes.wait_ready()`:

        worker = processes.start_worker(wait=False)
        bridge = processes.start_bridge(wait=False)
        processes.wait_ready()

Module-level helpers, usable with or without the fixture:
- `publish_jobs(jobs, ids=False)`: publish `{"name", "data", "opts"?}` dicts with the real Node client.
- `wait_until(predicate, timeout)`: poll until truthy; returns the value or raises AssertionError.
- `bullmq_counts()`: jobs per BullMQ state, read directly from Redis (`bull:crm-events:*`).
- `celery_queue_depths()`: messages waiting in the high/normal/low lists (plus `unacked`).
- `inbox_counts()`: inbox rows per status.
- `wait_for_quiescence(timeout)`: nothing waiting or active in BullMQ, nothing queued or
  unacknowledged in Celery, no inbox row in `received`, all stable for `stable_s`.
- `TcpProxy`: a TCP forwarder that can be taken down and brought back, to cut a child's
  connection to Redis (e.g. the bridge's Celery broker) without touching the server.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
NODE_PUBLISHER = ROOT / "tests" / "node" / "publish.mjs"
CELERY_QUEUES = ("high", "normal", "low")
# kombu's Redis transport keeps one list per priority step besides the plain queue name.
_KOMBU_PRIORITY_SEP = "\x06\x16"
_KOMBU_PRIORITY_STEPS = (3, 6, 9)

# Settings that keep process tests fast; tests and benchmarks may override or drop them.
TEST_BRIDGE_ENV: dict[str, str] = {
    "BRIDGE_LINGER_MS": "5",
    "BULLMQ_LOCK_DURATION_MS": "5000",
    "BULLMQ_STALLED_INTERVAL_MS": "2000",
    "BRIDGE_STATS_INTERVAL_S": "2",
    "BRIDGE_SHUTDOWN_TIMEOUT_S": "10",
    "BRIDGE_PUBLISH_RETRY_MAX_S": "1",
}
TEST_WORKER_ENV: dict[str, str] = {}

T = TypeVar("T")

# Every child ever started, so that an interpreter exit never leaves one behind.
_ALL: list[ManagedProcess] = []


# --- environment ------------------------------------------------------------


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
    env = dict(os.environ)
    env.update(
        DATABASE_URL=child_database_url(),
        DJANGO_SETTINGS_MODULE="config.settings.test",
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        BULLMQ_REDIS_URL=settings.BULLMQ_REDIS_URL,
        BULLMQ_QUEUE=settings.BULLMQ_QUEUE,
        BULLMQ_PREFIX=settings.BULLMQ_PREFIX,
        PYTHONUNBUFFERED="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update({k: str(v) for k, v in (overrides or {}).items()})
    return env


# --- processes ----------------------------------------------------------------


class ManagedProcess:
    """One child process in its own process group, with stdout+stderr in a log file."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log_path: Path, ready_marker: str | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.ready_marker = ready_marker  # the log text that says it is serving
        self.ready = False
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a SIGKILL reaches prefork children too
        )
        self.pid = self.popen.pid
        _ALL.append(self)

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.pid} rc={self.popen.returncode}>"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        """Wait until `text` appears in the log; fails early if the process exits."""

        def seen() -> bool:
            if text in self.output():
                return True
            if not self.alive:
                raise AssertionError(f"{self.name} exited ({self.returncode}) before logging {text!r}:\n{self.tail()}")
            return False

        wait_until(seen, timeout, message=lambda: f"{self.name} to log {text!r}:\n{self.tail()}")

    def wait_ready(self, timeout: float) -> None:
        """Wait until the process logged its `ready_marker` (once seen, returns at once)."""
        if self.ready_marker and not self.ready:
            self.wait_for_output(self.ready_marker, timeout)
        self.ready = True

    def send_signal(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash, as with `kill -9`)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._close_log()

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int:
        """SIGTERM (or `sig`), wait up to `timeout`, then SIGKILL the group. Returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        # Leftovers of the group (e.g. orphaned pool children) never outlive the test.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._close_log()
        return self.popen.returncode

    def _close_log(self) -> None:
        if not self._log.closed:
            self._log.close()


@atexit.register
def _kill_leftovers() -> None:
    for proc in _ALL:
        with contextlib.suppress(Exception):
            if proc.popen.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def bridge_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), "run_bridge", *args]


def beat_command(schedule_path: Path) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "config", "beat", "-s", str(schedule_path), "--loglevel=INFO"]


def worker_command(
    *, concurrency: int = 2, queues: str = "high,normal,low", pool: str = "prefork", hostname: str | None = None
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-P",
        pool,
        "--without-mingle",
        "--without-gossip",
        "--loglevel=INFO",
        "-n",
        hostname or f"test-{uuid.uuid4().hex[:8]}@%h",
    ]


class Processes:
    """Starts bridges and workers for one test; `kill_all()` (run by the fixture) ends them."""

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
        proc = ManagedProcess(name, args, subprocess_env(env), self.log_dir / f"{name}.log", ready_marker)
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
        """`python manage.py run_bridge`. `defaults` (TEST_BRIDGE_ENV unless given) then `env` apply.

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
        queues: str = "high,normal,low",
        pool: str = "prefork",
        env: Mapping[str, str] | None = None,
        wait: bool = True,
        timeout: float = 45.0,
    ) -> ManagedProcess:
        """`celery -A config worker -Q high,normal,low -c N -P prefork`. With `wait`, returns once ready."""
        merged = {**TEST_WORKER_ENV, **(env or {})}
        proc = self.start(
            name, worker_command(concurrency=concurrency, queues=queues, pool=pool), merged, ready_marker=" ready."
        )
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
        """`celery -A config beat`: the production beat schedule (parked-event sweep, score refresh).

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


# --- waiting ----------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    message: str | Callable[[], str] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy, and return it; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else (message or getattr(predicate, "__name__", "condition"))
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- Redis and inbox probes -----------------------------------------------------


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10)


def bullmq_counts(
    queue: str | None = None, *, redis_url: str | None = None, prefix: str | None = None
) -> dict[str, int]:
    """Jobs per state, read from `<prefix>:<queue>:*`. `waiting` includes paused and prioritized jobs."""
    client = _redis(redis_url or settings.BULLMQ_REDIS_URL)
    base = f"{prefix or settings.BULLMQ_PREFIX}:{queue or settings.BULLMQ_QUEUE}"
    try:
        pipe = client.pipeline(transaction=False)
        pipe.llen(f"{base}:wait")
        pipe.llen(f"{base}:paused")
        pipe.zcard(f"{base}:prioritized")
        pipe.llen(f"{base}:active")
        pipe.zcard(f"{base}:delayed")
        pipe.zcard(f"{base}:completed")
        pipe.zcard(f"{base}:failed")
        wait, paused, prioritized, active, delayed, completed, failed = pipe.execute()
    finally:
        client.close()
    return {
        "waiting": wait + paused + prioritized,
        "active": active,
        "delayed": delayed,
        "completed": completed,
        "failed": failed,
    }


def bullmq_job_state(job_id: str, *, redis_url: str | None = None) -> str:
    """`completed`, `failed`, `active`, `waiting`, `delayed`, `removed` (hash gone) or `unknown`."""
    client = _redis(redis_url or settings.BULLMQ_REDIS_URL)
    base = f"{settings.BULLMQ_PREFIX}:{settings.BULLMQ_QUEUE}"
    try:
        if client.zscore(f"{base}:completed", job_id) is not None:
            return "completed"
        if client.zscore(f"{base}:failed", job_id) is not None:
            return "failed"
        if client.zscore(f"{base}:delayed", job_id) is not None:
            return "delayed"
        if job_id.encode() in client.lrange(f"{base}:active", 0, -1):
            return "active"
        if job_id.encode() in client.lrange(f"{base}:wait", 0, -1):
            return "waiting"
        if not client.exists(f"{base}:{job_id}"):
            return "removed"
        return "unknown"
    finally:
        client.close()


def celery_queue_depths(*, redis_url: str | None = None, queues: tuple[str, ...] = CELERY_QUEUES) -> dict[str, int]:
    """Messages waiting per Celery queue (all priority steps), and `unacked`: delivered, not yet acknowledged."""
    client = _redis(redis_url or settings.CELERY_BROKER_URL)
    try:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
            for step in _KOMBU_PRIORITY_STEPS:
                pipe.llen(f"{queue}{_KOMBU_PRIORITY_SEP}{step}")
        pipe.hlen("unacked")
        values = pipe.execute()
    finally:
        client.close()
    per_queue = len(_KOMBU_PRIORITY_STEPS) + 1
    depths = {queue: sum(values[i * per_queue : (i + 1) * per_queue]) for i, queue in enumerate(queues)}
    depths["unacked"] = values[-1]
    return depths


def celery_messages(queue: str, *, redis_url: str | None = None) -> list[dict[str, Any]]:
    """The messages waiting in a Celery queue, oldest first: `{"task", "args", "kwargs", "headers"}`."""
    import base64

    client = _redis(redis_url or settings.CELERY_BROKER_URL)
    try:
        raw = client.lrange(queue, 0, -1)
    finally:
        client.close()
    messages = []
    for item in reversed(raw):  # kombu LPUSHes and BRPOPs: the tail is the oldest
        envelope = json.loads(item)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        headers = envelope.get("headers", {})
        messages.append({"task": headers.get("task"), "args": args, "kwargs": kwargs, "headers": headers})
    return messages


def inbox_counts() -> dict[str, int]:
    from django.db.models import Count

    from messaging_events.models import InboundEvent

    rows = InboundEvent.objects.values("status").annotate(n=Count("id")).order_by()
    return {row["status"]: row["n"] for row in rows}


def quiescence_snapshot() -> dict[str, Any]:
    from messaging_events.models import InboundEvent

    return {
        "bullmq": bullmq_counts(),
        "celery": celery_queue_depths(),
        "inbox_received": InboundEvent.objects.filter(status="received").count(),
        "inbox_rows": InboundEvent.objects.count(),
    }


def _is_quiet(snap: dict[str, Any]) -> bool:
    return (
        snap["bullmq"]["waiting"] == 0
        and snap["bullmq"]["active"] == 0
        and snap["bullmq"]["delayed"] == 0
        and all(v == 0 for v in snap["celery"].values())
        and snap["inbox_received"] == 0
    )


def wait_for_quiescence(
    timeout: float = 60.0, *, stable_s: float = 1.0, interval: float = 0.1, min_inbox_rows: int = 0
) -> dict[str, Any]:
    """Wait until BullMQ has nothing waiting/active/delayed, Celery nothing queued or unacked, no
    inbox row is `received`, at least `min_inbox_rows` rows exist, and the inbox row count held
    still, all for `stable_s`. Returns the last snapshot."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    last_rows = -1
    snap: dict[str, Any] = {}
    while True:
        snap = quiescence_snapshot()
        now = time.monotonic()
        quiet = _is_quiet(snap) and snap["inbox_rows"] >= min_inbox_rows and snap["inbox_rows"] == last_rows
        last_rows = snap["inbox_rows"]
        if not quiet:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= stable_s:
            return snap
        if now >= deadline:
            raise AssertionError(f"not quiescent after {timeout}s: {snap}")
        time.sleep(interval)


# --- publishing -------------------------------------------------------------------


class _NodePublisher:
    """One `publish.mjs --serve` for the whole test session: Node and bullmq start in 2-3 s on the loaded
    machine, paid once instead of at every `publish_jobs`. The jobs still go through the real Node
    client's `Queue.addBulk`. Restarted after any failure."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._answers: queue.Queue[bytes] = queue.Queue()
        self._stderr = Path(tempfile.gettempdir()) / f"node-publisher-{os.getpid()}.log"
        self._lock = threading.Lock()

    def _running(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._answers = queue.Queue()
            with self._stderr.open("ab") as stderr:
                self._proc = subprocess.Popen(
                    ["node", str(NODE_PUBLISHER), "--serve"],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                )
            threading.Thread(target=self._read, args=(self._proc, self._answers), daemon=True).start()
        return self._proc

    @staticmethod
    def _read(proc: subprocess.Popen, answers: queue.Queue[bytes]) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            answers.put(line)
        answers.put(b"")  # EOF: the publisher exited

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def publish(self, header: dict[str, Any], lines: list[str], timeout: float) -> dict[str, Any]:
        with self._lock:
            proc = self._running()
            try:
                proc.stdin.write((json.dumps(header) + "\n" + "".join(lines)).encode())  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                answer = self._answers.get(timeout=timeout)
            except (OSError, queue.Empty) as exc:
                self.stop()
                raise RuntimeError(f"node publisher failed ({exc!r}): {self._stderr_tail()}") from exc
            if not answer:
                self.stop()
                raise RuntimeError(f"node publisher exited: {self._stderr_tail()}")
            result = json.loads(answer)
            if "error" in result:
                self.stop()  # a fresh one next time, with fresh connections
                raise RuntimeError(f"node publisher failed: {result['error'][-2000:]}")
            return result

    def _stderr_tail(self) -> str:
        return self._stderr.read_text(errors="replace")[-2000:] if self._stderr.exists() else ""


_NODE_PUBLISHER = _NodePublisher()
atexit.register(_NODE_PUBLISHER.stop)


def publish_jobs(
    jobs: list[dict[str, Any]],
    ids: bool = False,
    *,
    queue: str | None = None,
    redis_url: str | None = None,
    chunk: int = 1000,
    timeout: float = 300.0,
) -> list[str] | int:
    """Publish `{"name", "data", "opts"?}` jobs with the real Node BullMQ client (`Queue.addBulk`).

    Returns the job ids in order with `ids=True`, else the number published.
    """
    header = {
        "redis": redis_url or settings.BULLMQ_REDIS_URL,
        "queue": queue or settings.BULLMQ_QUEUE,
        "prefix": settings.BULLMQ_PREFIX,
        "chunk": chunk,
        "ids": ids,
        "count": len(jobs),
    }
    # ASCII escapes: a lone UTF-16 surrogate reaches the Node client as it would from JavaScript.
    result = _NODE_PUBLISHER.publish(header, [json.dumps(job) + "\n" for job in jobs], timeout)
    assert result["published"] == len(jobs), result
    return [str(i) for i in result["ids"]] if ids else result["published"]


# --- network faults ---------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `down()` closes the listener and every connection
    (clients see refused connections); `up()` listens again on the same port.

        proxy = TcpProxy.for_redis_url(settings.CELERY_BROKER_URL)
        bridge = processes.start_bridge(env={"CELERY_BROKER_URL": proxy.url})
        proxy.down(); ...; proxy.up()
        proxy.close()
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        self._url_template: str | None = None
        self.up()

    @classmethod
    def for_redis_url(cls, url: str) -> TcpProxy:
        parts = urlsplit(url)
        proxy = cls(parts.hostname or "127.0.0.1", parts.port or 6379)
        netloc = f"{parts.username}@" if parts.username else ""
        proxy._url_template = urlunsplit((parts.scheme, f"{netloc}127.0.0.1:{proxy.port}", parts.path, "", ""))
        return proxy

    @property
    def url(self) -> str:
        assert self._url_template, "use TcpProxy.for_redis_url to get a URL"
        return self._url_template

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self.down()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select(timeout=1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            sel.close()
            with self._lock:
                self._conns.discard(a)
                self._conns.discard(b)
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()


@pytest.fixture
def broker_proxy() -> Iterator[TcpProxy]:
    """A TcpProxy in front of the Celery broker's Redis; closed at teardown."""
    proxy = TcpProxy.for_redis_url(settings.CELERY_BROKER_URL)
    try:
        yield proxy
    finally:
        proxy.close()
