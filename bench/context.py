"""The `Bench` context every phase receives: its processes, its two Redis, publishing, and its records.

Processes are the Procfile's (`harness.procfile`), started and stopped by the shared harness
(`harness.process`): each in its own process group, its pid written to `.dev/bench/bench.pids` for
scripts/bench.sh's trap, its RSS sampled for the peak-memory figures.
"""

import contextlib
import json
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

from bench.config import INBOX_ONLY, MB, NODE_DIR, ROOT, log
from bench.rss import RssSampler
from harness.process import ManagedProcess, child_env
from harness.procfile import beat_command, bridge_command, worker_command


class Bench:
    def __init__(self) -> None:
        self.stack_dir = Path(os.environ.get("STACK_DIR", ROOT / ".dev" / "bench"))
        self.work = self.stack_dir / "run"
        self.work.mkdir(parents=True, exist_ok=True)
        for old in self.work.glob("*.log"):
            old.unlink()
        self.pid_file = self.stack_dir / "bench.pids"
        self.bullmq = redis.Redis.from_url(os.environ["BULLMQ_REDIS_URL"])
        self.broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
        self.prefix = os.environ.get("BULLMQ_PREFIX", "bull")
        self.queue = os.environ.get("BULLMQ_QUEUE", "crm-events")
        self.sampler = RssSampler()
        self.sampler.start()
        self.procs: list[ManagedProcess] = []
        self.bridge_peaks: list[tuple[float, str]] = []
        self.worker_peaks: list[tuple[float, str]] = []
        self.results: dict = {}
        self.details: dict = {"phases": {}}
        self.env = child_env()

    # --- processes ---------------------------------------------------------------------------------

    def start(self, label: str, argv: list[str], extra_env: dict | None = None) -> ManagedProcess:
        env = {**self.env, **(extra_env or {})}
        proc = ManagedProcess(label, argv, env, self.work / f"{label}.log", pid_file=self.pid_file)
        self.procs.append(proc)
        self.sampler.add(proc)
        return proc

    def stop(self, proc: ManagedProcess) -> None:
        """SIGTERM to the whole group (the pool children stop at once), SIGKILL after 30 s; keep its peak RSS."""
        peak_bytes, peak_process = self.sampler.remove(proc)
        proc.stop(30.0, whole_group=True)
        self.procs.remove(proc)
        peak = (peak_bytes / MB, f"{proc.name} {peak_process}")
        if proc.name.startswith("bridge"):
            self.bridge_peaks.append(peak)
        elif proc.name.startswith("worker"):
            self.worker_peaks.append(peak)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)

    def start_bridge(self, label: str = "bridge", extra_env: dict | None = None) -> ManagedProcess:
        proc = self.start(label, bridge_command(), extra_env)
        proc.wait_for_output("bridge_started", 60)
        return proc

    def start_workers(self, label: str = "worker") -> list[ManagedProcess]:
        """The Procfile's worker and beat (beat's schedule file in the run's directory), once both are ready."""
        argv = worker_command()
        if INBOX_ONLY:
            argv += ["--include", "bench.inbox_only"]
        worker = self.start(label, argv)
        beat = self.start(f"beat-{label}", beat_command(self.work / "celerybeat-schedule"))
        worker.wait_for_output(" ready.", 90)
        beat.wait_for_output("beat: Starting", 60)
        return [worker, beat]

    # --- Redis -------------------------------------------------------------------------------------

    def key(self, suffix: str) -> str:
        return f"{self.prefix}:{self.queue}:{suffix}"

    def flush_redis(self) -> None:
        self.bullmq.flushdb()
        self.broker.flushdb()

    def node_args(self, script: str, *extra: str) -> list[str]:
        """A script of tests/node against the bench's BullMQ queue."""
        redis_url = os.environ["BULLMQ_REDIS_URL"]
        return ["node", script, "--redis", redis_url, "--queue", self.queue, "--prefix", self.prefix, *extra]

    def publish(self, path: Path, *, timeout_s: float = 600) -> dict:
        """The Node client adds every job of a JSON-lines file (addBulk, 1,000 at a time)."""
        with open(path, "rb") as stdin:
            out = subprocess.run(
                self.node_args("publish.mjs"),
                cwd=NODE_DIR,
                stdin=stdin,
                capture_output=True,
                timeout=timeout_s,
                check=True,
                env=self.env,
            )
        return json.loads(out.stdout.decode().strip().splitlines()[-1])

    def bullmq_depth(self) -> tuple[int, int]:
        pipe = self.bullmq.pipeline(transaction=False)
        pipe.llen(self.key("wait"))
        pipe.llen(self.key("active"))
        pipe.zcard(self.key("prioritized"))
        wait, active, prioritized = pipe.execute()
        return wait + prioritized, active

    def wait_bullmq_drained(self, preloaded: int, timeout_s: float) -> tuple[float, float]:
        """With `preloaded` jobs waiting and a consumer starting: (first job taken, queue empty), perf-counter times."""
        started = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            waiting, active = self.bullmq_depth()
            moment = time.perf_counter()
            if started is None and waiting < preloaded:
                started = moment
            if started is not None and waiting == 0 and active == 0:
                return started, moment
            time.sleep(0.005)
        raise TimeoutError(f"BullMQ not drained after {timeout_s}s: {self.bullmq_depth()}")

    # --- records -----------------------------------------------------------------------------------

    def phase(self, name: str) -> dict:
        record = {"load_at_start": [round(x, 2) for x in os.getloadavg()], "started": datetime.now(UTC).isoformat()}
        self.details["phases"][name] = record
        log.info("=== %s (load %s)", name, record["load_at_start"])
        return record
