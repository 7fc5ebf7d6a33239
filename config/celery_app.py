import os
import shutil
import sys
import tempfile

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun, worker_init

from config import redis_transport

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
redis_transport.install()

# A worker with WORKER_METRICS_PORT counts in prometheus-client's multiprocess mode, which must be chosen
# before any metric exists: one directory per worker node, shared by its pool children.
_METRICS_PORT = os.environ.get("WORKER_METRICS_PORT")
if _METRICS_PORT and "worker" in sys.argv[1:]:
    _metrics_dir = os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR", f"{tempfile.gettempdir()}/crm-worker-metrics-{os.getpid()}"
    )
    # Empty: files left by an earlier run of this node would be summed in.
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir)
    # prometheus-client picks its value class when first imported, and the `celery` command has already
    # imported it (Flower's CLI plugin does): pick again, before any of our metrics exists.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()

app = Celery("crm")
# Every Celery setting lives in Django settings under the CELERY_ prefix.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _configure_logging(**_: object) -> None:
    """Celery's own loggers go through Django's LOGGING, so LOG_FORMAT and LOG_LEVEL apply to them too."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@worker_init.connect
def _serve_worker_metrics(**_: object) -> None:
    # In the worker's main process, before the pool forks: the children inherit no server thread.
    if _METRICS_PORT and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from messaging_events.metrics import serve_metrics

        serve_metrics(int(_METRICS_PORT))


@task_prerun.connect
@task_postrun.connect
def _close_old_database_connections(sender: object = None, **_: object) -> None:
    """What Django does around each request, around each task: close a connection past CONN_MAX_AGE, left
    unusable by an error, or left in a transaction, and check the kept one's health before its first query.
    Celery's own fix-up would close it every time (CELERY_DB_REUSE_MAX). An eager task runs inside its
    caller's transaction (tests), so it is left alone, as the fix-up leaves it."""
    from django.db import close_old_connections

    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    close_old_connections()
