"""One child process in its own process group: start, wait until ready, stop (SIGTERM, then SIGKILL).

The group is what makes a stop complete: a Celery worker's prefork children, or a backfill's validating
process, are in the parent's group, so the final SIGKILL of the group reaches them even when the parent
died first. Every child is also killed when this interpreter exits, and may be written to a pid file that
a shell trap reads (scripts/bench.sh), so nothing outlives a run.
"""

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from harness.procfile import ROOT

# Every child ever started, so that an interpreter exit never leaves one behind.
_ALL: list["ManagedProcess"] = []


def child_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child: unbuffered output, this interpreter's bin first on PATH
    (so the Procfile's `python` and `celery` are the virtualenv's), then `overrides`."""
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    env.update({key: str(value) for key, value in (overrides or {}).items()})
    return env


class ManagedProcess:
    """A started child with stdout and stderr in a log file, and the log line that says it is serving."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        ready_marker: str | None = None,
        pid_file: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.ready_marker = ready_marker
        self.ready = False
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a SIGKILL of the group reaches every child
        )
        self.pid = self.popen.pid
        _ALL.append(self)
        if pid_file is not None:
            with pid_file.open("a") as pids:
                pids.write(f"{self.pid}\n")

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

    def wait_for_output(self, text: str, timeout: float = 30.0, interval: float = 0.1) -> None:
        """Until `text` appears in the log. AssertionError if the process exits first or on timeout."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if not self.alive:
                raise AssertionError(f"{self.name} exited ({self.returncode}) before logging {text!r}:\n{self.tail()}")
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {self.name} to log {text!r}:\n{self.tail()}"
                )
            time.sleep(interval)

    def wait_ready(self, timeout: float) -> None:
        """Until the process logged its `ready_marker` (once seen, returns at once)."""
        if self.ready_marker and not self.ready:
            self.wait_for_output(self.ready_marker, timeout)
        self.ready = True

    def send_signal(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash, as with `kill -9`)."""
        self._kill_group()
        self.popen.wait(10)
        self._close_log()

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM, *, whole_group: bool = False) -> int:
        """`sig` (SIGTERM) to the process, or to its whole group with `whole_group`; wait up to `timeout`,
        then SIGKILL the group. Returns the exit code.

        The process alone is what a process manager signals: a Celery worker then finishes its running
        tasks (warm shutdown). The whole group also ends its pool children at once."""
        if self.popen.poll() is None:
            if whole_group:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, sig)
            else:
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.popen.wait(10)
        # Leftovers of the group (e.g. orphaned pool children) never outlive the stop.
        self._kill_group()
        self._close_log()
        return self.popen.returncode

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _close_log(self) -> None:
        if not self._log.closed:
            self._log.close()


@atexit.register
def _kill_leftovers() -> None:
    for proc in _ALL:
        with contextlib.suppress(Exception):
            if proc.popen.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
