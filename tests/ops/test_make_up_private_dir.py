"""`make up` from a checkout inside a mode-700 directory, as root: the README's first case.

PostgreSQL runs as the `postgres` user, which cannot enter root's private directories. The
stack must still come up (the data directory then lives under PostgreSQL's home), say where,
leave the user's directories as they were, and stop everything on Ctrl-C.
"""

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.processes import ROOT, free_port

# `processes`: `make up` starts the whole system (PostgreSQL, Redis, web, bridge, worker, beat, Flower), and
# `make test` a second stack, so these are process tests and stay out of `make test-fast`.
pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(os.geteuid() != 0, reason="the mode-700 case is about root running PostgreSQL"),
]

# The test's own stack settings must not leak into the child: `make up` starts its own servers (with fsync
# on: `PG_FSYNC=off` is the test cluster's alone).
CHILD_ENV_DROP = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "BULLMQ_REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
    "STACK_DIR",
    "PG_FSYNC",
)


def checkout_copy(target: Path) -> None:
    """The working tree's tracked files, as a fresh clone would have them (uncommitted edits included)."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    # The Python and Node installs are reused: installing them again is not what this test is about.
    (target / ".venv").symlink_to(ROOT / ".venv")
    (target / "tests" / "node" / "node_modules").symlink_to(ROOT / "tests" / "node" / "node_modules")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def private_clone(tmp_path: Path) -> tuple[Path, Path]:
    """A mode-700 directory (like root's home) holding a checkout."""
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    clone = private / "crm-clone"
    clone.mkdir()
    checkout_copy(clone)
    return private, clone


def child_env(ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROP}
    env.update({k: str(v) for k, v in ports.items()})
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not p.startswith(str(ROOT)))
    return env


def assert_left_as_it_was(private: Path, clone: Path) -> None:
    """The user's directories keep their owner and mode; nothing in the checkout went to `postgres`."""
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert private.stat().st_uid == 0
    assert not (clone / ".dev" / "pg").exists() and not (clone / ".dev" / "test" / "pg").exists()
    assert all(path.stat().st_uid == 0 for path in (clone / ".dev").rglob("*") if not path.is_symlink())


def test_make_up_serves_the_admin_from_a_mode_700_directory(tmp_path: Path) -> None:
    private, clone = private_clone(tmp_path)
    ports = {"PG_PORT": free_port(), "REDIS_PORT": free_port(), "PORT": free_port(), "FLOWER_PORT": free_port()}
    env = child_env(ports)
    log_path = tmp_path / "make-up.log"
    data_dir = None
    with log_path.open("wb") as log:
        make = subprocess.Popen(
            ["make", "up"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 180
            login = f"http://127.0.0.1:{ports['PORT']}/admin/login/"
            while True:
                assert make.poll() is None, f"make up exited {make.returncode}:\n{log_path.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"no admin after 180 s:\n{log_path.read_text()[-4000:]}"
                try:
                    with urllib.request.urlopen(login, timeout=2) as response:
                        if response.status == 200 and b"Django" in response.read():
                            break
                except OSError:
                    time.sleep(1)
            data_dir = Path((clone / ".dev" / "pg-data-dir").read_text().strip())
            output = log_path.read_text()
            assert f"PostgreSQL data is in {data_dir}" in output
            assert not str(data_dir).startswith(str(private)), data_dir
            assert (data_dir / "PG_VERSION").is_file()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal reaches the whole group
            try:
                make.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait(10)
            if data_dir is not None:
                shutil.rmtree(data_dir.parent, ignore_errors=True)
    assert_left_as_it_was(private, clone)
    # Ctrl-C stopped the servers it started.
    assert "servers stopped" in log_path.read_text()
    assert not any(port_open(ports[name]) for name in ("PORT", "PG_PORT", "REDIS_PORT", "FLOWER_PORT"))


def test_make_test_runs_from_a_mode_700_directory(tmp_path: Path) -> None:
    # `make test` runs the whole suite; scripts/test.sh with one module is the same path, minus the wait.
    private, clone = private_clone(tmp_path)
    env = child_env({"TEST_PG_PORT": free_port(), "TEST_REDIS_PORT": free_port()})
    result = subprocess.run(
        ["bash", "scripts/test.sh", "tests/foundation/test_services_are_real.py", "-q"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    data_dir = Path((clone / ".dev" / "test" / "pg-data-dir").read_text().strip())
    shutil.rmtree(data_dir.parent, ignore_errors=True)
    assert result.returncode == 0, output[-4000:]
    assert " passed" in result.stdout
    assert f"PostgreSQL data is in {data_dir}" in output
    assert not str(data_dir).startswith(str(private))
    assert_left_as_it_was(private, clone)
