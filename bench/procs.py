"""Small process helpers for the benchmark: start the Procfile's processes, wait until ready, sample RSS, stop.

Every process is started in its own session (process group); its pid is appended to a pid file
that scripts/bench.sh's trap reads, so nothing outlives the run even if this interpreter is killed.
"""

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def procfile_command(name: str) -> list[str]:
    """The Procfile's command line for a process type, so the bench runs what production runs."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            return shlex.split(os.path.expandvars(command.strip()))
    raise KeyError(f"no {name!r} in the Procfile")


class Proc:
    """One started process (with its children), its log file, and its peak RSS."""

    def __init__(self, label: str, argv: list[str], log_path: Path, env: dict[str, str], pid_file: Path) -> None:
        self.label = label
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        with open(pid_file, "a") as pids:
            pids.write(f"{self.popen.pid}\n")
        self.peak_rss = 0  # bytes, of the largest single process in the tree
        self.peak_rss_process = ""

    def processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample_rss(self) -> None:
        for process in self.processes():
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                continue
            if rss > self.peak_rss:
                self.peak_rss = rss
                self.peak_rss_process = f"pid {process.pid} ({'main' if process.pid == self.popen.pid else 'child'})"

    def wait_for_log(self, needle: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.log_path.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.label} exited ({self.popen.returncode}); see {self.log_path}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.label} not ready after {timeout_s}s; see {self.log_path}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM to the group, SIGKILL after the timeout."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        # Children that outlived their parent (a killed prefork pool) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()
        return self.popen.returncode


class RssSampler:
    """Samples the RSS of every registered process tree in a background thread."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.procs: list[Proc] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._lock = threading.Lock()

    def add(self, proc: Proc) -> None:
        with self._lock:
            self.procs.append(proc)

    def remove(self, proc: Proc) -> None:
        proc.sample_rss()
        with self._lock:
            if proc in self.procs:
                self.procs.remove(proc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                procs = list(self.procs)
            for proc in procs:
                proc.sample_rss()
