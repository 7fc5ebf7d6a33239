import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

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
