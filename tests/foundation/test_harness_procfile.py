"""The process harness reads the Procfile: tests and the bench run the commands production runs."""

from pathlib import Path

from harness.procfile import beat_command, bridge_command, procfile_command, with_option, worker_command


def test_commands_are_the_procfile_lines() -> None:
    assert bridge_command() == ["python", "manage.py", "run_bridge"]
    assert worker_command()[:4] == ["celery", "-A", "config", "worker"]
    assert procfile_command("worker") == worker_command()


def test_options_replace_the_procfile_values_or_are_appended() -> None:
    argv = worker_command(concurrency=1, hostname="a@%h", pool="solo", loglevel="DEBUG")
    assert argv[argv.index("-c") + 1] == "1"
    assert argv[argv.index("-n") + 1] == "a@%h"
    assert argv[argv.index("-P") + 1] == "solo"
    assert "--loglevel=DEBUG" in argv
    assert argv.count("-c") == 1 and argv.count("-n") == 1
    assert with_option(["x", "--flag=1"], "--flag", "2") == ["x", "--flag=2"]
    schedule = Path("/tmp/schedule")
    beat = beat_command(schedule)
    assert beat[beat.index("--schedule") + 1] == str(schedule)
