"""The Procfile's commands as argv: the bridge, the workers and beat run exactly as `make up` runs them.

A caller changes an option (`-c`, `-n`, `--schedule`) with `with_option`; everything else stays as written
in the Procfile, so a flag added there reaches the tests and the bench at once.
"""

import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "Procfile"


def procfile_command(name: str) -> list[str]:
    """The Procfile's command line for a process type (`bridge`, `worker`, `beat`, ...)."""
    for line in PROCFILE.read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            return shlex.split(os.path.expandvars(command.strip()))
    raise KeyError(f"no {name!r} in the Procfile")


def with_option(argv: list[str], flag: str, value: str) -> list[str]:
    """`argv` with `flag value` (or `flag=value`) set to `value`: replaced where present, else appended."""
    result = list(argv)
    for i, arg in enumerate(result):
        if arg == flag and i + 1 < len(result):
            result[i + 1] = value
            return result
        if arg.startswith(f"{flag}="):
            result[i] = f"{flag}={value}"
            return result
    return [*result, flag, value]


def bridge_command(*args: str) -> list[str]:
    """`python manage.py run_bridge`, with extra arguments."""
    return [*procfile_command("bridge"), *args]


def worker_command(
    *,
    concurrency: int | None = None,
    queues: str | None = None,
    pool: str | None = None,
    hostname: str | None = None,
    loglevel: str | None = None,
) -> list[str]:
    """The Procfile's Celery worker; each given option replaces the Procfile's value."""
    argv = procfile_command("worker")
    for flag, value in (("-c", concurrency), ("-Q", queues), ("-P", pool), ("-n", hostname), ("--loglevel", loglevel)):
        if value is not None:
            argv = with_option(argv, flag, str(value))
    return argv


def beat_command(schedule_path: Path) -> list[str]:
    """The Procfile's beat, its schedule file moved to `schedule_path` (a run's own)."""
    return with_option(procfile_command("beat"), "--schedule", str(schedule_path))


def manage_command(*args: str) -> list[str]:
    """`python manage.py <args>` with this interpreter (one-off commands the Procfile does not name)."""
    return [sys.executable, str(ROOT / "manage.py"), *args]
