"""The production web process: gunicorn serves config.wsgi with production settings, whitenoise the static files."""

import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.test import Client, override_settings

from tests.processes import ROOT, Processes, free_port, subprocess_env, wait_until

pytestmark = pytest.mark.processes


def _production_env(static_root: Path) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": "a-production-test-key-" + "x" * 40,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_STATIC_ROOT": str(static_root),
    }


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    # A TLS-terminating proxy in front of gunicorn says so; without it production redirects to https.
    request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https"})  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_gunicorn_serves_the_admin_login_page_and_its_css(processes: Processes, tmp_path: Path) -> None:
    env = _production_env(tmp_path / "static")
    collected = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=ROOT,
        env=subprocess_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert collected.returncode == 0, collected.stderr
    port = free_port()
    web = processes.start(
        "gunicorn",
        [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        env,
    )
    base = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        if not web.alive:
            raise AssertionError(f"gunicorn exited:\n{web.tail()}")
        try:
            return _get(f"{base}/healthz")[0] == 200
        except OSError:
            return False

    wait_until(answering, 30, interval=0.2)
    assert _get(f"{base}/healthz")[2] == b"ok"

    status, _, body = _get(f"{base}/admin/login/")
    assert status == 200
    page = body.decode()
    assert "Log in" in page
    # The manifest storage names each file by its content hash: the page links the collected copy.
    css_path = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page)
    assert css_path, page[:2000]
    status, headers, css = _get(base + css_path.group(1))
    assert status == 200
    assert headers["Content-Type"].startswith("text/css")
    assert b"--body-fg" in css  # the admin's own stylesheet, not an error page
    assert "immutable" in headers.get("Cache-Control", "")


def test_production_settings_pass_check_deploy(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=subprocess_env(_production_env(tmp_path / "static")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


@pytest.mark.django_db
def test_healthz_is_ok_when_the_database_and_redis_answer() -> None:
    response = Client().get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok")


@pytest.mark.django_db
def test_healthz_is_not_ok_when_redis_is_unreachable_and_says_no_more() -> None:
    closed = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with override_settings(CELERY_BROKER_URL=closed):
        response = Client().get("/healthz")
    assert (response.status_code, response.content) == (503, b"not ok")
