"""Settings shared by every environment. Everything comes from the environment via one `environ.Env()`."""

from pathlib import Path

import environ
from kombu import Exchange, Queue

from messaging_events.contract.routing import QUEUE_ORDER

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

# --- Django ---------------------------------------------------------------
SECRET_KEY = env("DJANGO_SECRET_KEY", default="insecure-local-only")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "crm",
    "messaging_events",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves STATIC_ROOT from the WSGI process (gunicorn) with far-future caching of hashed names.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:54329/crm")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# psycopg prepares a statement at its sixth execution on a connection; only the worker's large statements
# can be prepared (they bind on the server: crm/services/prepared.py), so PostgreSQL parses and plans them
# once per connection (docs/decisions.md, "Prepared statements for the worker's large statements").
# DJANGO_DB_PREPARED_STATEMENTS=false behind a transaction pooler that cannot keep prepared statements.
DATABASES["default"]["OPTIONS"] = {
    **DATABASES["default"].get("OPTIONS", {}),
    "prepare_threshold": 5 if env.bool("DJANGO_DB_PREPARED_STATEMENTS", default=True) else None,
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "staticfiles")

# --- Logging --------------------------------------------------------------
# LOG_FORMAT=json gives one JSON object per line with each `extra` field at the top level (python-json-logger);
# the default is readable text with the fields as key=value. Celery's loggers use the same config (setup_logging).
LOG_FORMAT = env("LOG_FORMAT", default="text")
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "structured": {"()": "messaging_events.logging.formatter", "fmt": LOG_FORMAT},
    },
    "filters": {"no_celery_task_data": {"()": "messaging_events.logging.DropCeleryTaskData"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "structured", "filters": ["no_celery_task_data"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "celery": {"level": "INFO"},
    },
}

# --- Celery ---------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:63799/0")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
# A message is acknowledged only after its task ran, and a worker that dies mid-task
# hands the message back: together with the inbox this gives at-least-once delivery
# and exactly-once effects.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A batch killed by the hard time limit goes back to its queue: acknowledging it would lose the events it
# had not recorded (the soft limit hands unfinished events to a retry first; docs/decisions.md).
CELERY_TASK_ACKS_ON_TIMEOUT = False
# One message carries a batch of up to BRIDGE_BATCH_SIZE events, so a prefetch of 1
# already keeps a child busy; a larger prefetch would let a child hold `low` batches
# while a `high` batch waits in Redis. See docs/decisions.md.
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=1)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fix-up closes every database connection before and after each task unless this is set
# (celery PR #9824): a fresh PostgreSQL backend per batch, with cold caches and no prepared statements. Set,
# it closes them only every 2 x this many tasks; `config.celery_app` gives tasks Django's own request
# lifecycle instead (close_old_connections: CONN_MAX_AGE and the health check). See docs/decisions.md.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1_000_000)
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Never give up on the broker: Celery's default (100 attempts, ~45 minutes) ends the worker during a long
# Redis outage. Celery logs every attempt ("Cannot connect to redis://:**@…  Trying again in 8.00 seconds... (4/None)").
CELERY_BROKER_CONNECTION_MAX_RETRIES = None

# The queue order is written once, in the contract (`-Q high,normal,low` in the Procfile follows it).
CELERY_QUEUE_NAMES = tuple(priority.value for priority in QUEUE_ORDER)
CELERY_TASK_QUEUES = tuple(Queue(name, Exchange(name), routing_key=name) for name in CELERY_QUEUE_NAMES)
CELERY_TASK_DEFAULT_QUEUE = "normal"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # kombu >= 5.7 polls the queues in the order given to -Q: high, then normal, then low.
    "queue_order_strategy": "priority",
    # An unacknowledged message returns to its queue after this many seconds. It must exceed the longest a
    # message is legitimately held unacknowledged: a batch's run (hard limit CELERY_TASK_TIME_LIMIT, 300 s)
    # and a retry's countdown (at most EVENT_TASK_RETRY_BACKOFF_MAX_S, 60 s). 600 s is twice the hard limit;
    # it is also how late a crashed worker's batch runs again. See docs/reliability.md.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=600),
    # Look for expired unacknowledged messages every unacked_restore_interval (10 s), not every ~100 s.
    "unacked_restore_throttle": 1,
}
CELERY_BEAT_SCHEDULE = {
    "sweep-parked-events": {
        "task": "messaging_events.sweep_parked_events",
        "schedule": env.float("PARKED_SWEEP_INTERVAL_S", default=60.0),
        "options": {"queue": "normal"},
    },
    "reconcile-inflight-batches": {
        "task": "messaging_events.reconcile_inflight_batches",
        "schedule": env.float("INFLIGHT_RECONCILE_INTERVAL_S", default=30.0),
        "options": {"queue": "high"},
    },
    "refresh-pending-engagement-scores": {
        "task": "crm.refresh_pending_engagement_scores",
        "schedule": env.float("ENGAGEMENT_SWEEP_INTERVAL_S", default=30.0),
        "options": {"queue": "low"},
    },
}

# --- BullMQ source (the Messaging service's queue) -------------------------
BULLMQ_REDIS_URL = env("BULLMQ_REDIS_URL", default="redis://127.0.0.1:63799/1")
BULLMQ_QUEUE = env("BULLMQ_QUEUE", default="crm-events")
BULLMQ_PREFIX = env("BULLMQ_PREFIX", default="bull")
BULLMQ_LOCK_DURATION_MS = env.int("BULLMQ_LOCK_DURATION_MS", default=30_000)
BULLMQ_STALLED_INTERVAL_MS = env.int("BULLMQ_STALLED_INTERVAL_MS", default=30_000)
BULLMQ_KEEP_COMPLETED = env.int("BULLMQ_KEEP_COMPLETED", default=10_000)

# --- Bridge ---------------------------------------------------------------
BRIDGE_BATCH_SIZE = env.int("BRIDGE_BATCH_SIZE", default=32)
BRIDGE_LINGER_MS = env.int("BRIDGE_LINGER_MS", default=20)
# While the workers are behind (the last publish found messages waiting in the queue), normal and low
# batches wait up to this long to fill: a worker's cost is mostly per message (docs/performance.md).
BRIDGE_BACKLOG_LINGER_MS = env.int("BRIDGE_BACKLOG_LINGER_MS", default=250)
BRIDGE_CONCURRENCY = env.int("BRIDGE_CONCURRENCY", default=64)
BRIDGE_MAX_JOB_BYTES = env.int("BRIDGE_MAX_JOB_BYTES", default=64 * 1024)
BRIDGE_PUBLISH_RETRY_MAX_S = env.float("BRIDGE_PUBLISH_RETRY_MAX_S", default=10.0)
BRIDGE_SHUTDOWN_TIMEOUT_S = env.float("BRIDGE_SHUTDOWN_TIMEOUT_S", default=20.0)
BRIDGE_STATS_INTERVAL_S = env.float("BRIDGE_STATS_INTERVAL_S", default=10.0)
# How often the bridge pings both Redis URLs while they answer; failures retry with backoff up to
# BRIDGE_PUBLISH_RETRY_MAX_S and are logged each time.
BRIDGE_CONNECTION_CHECK_S = env.float("BRIDGE_CONNECTION_CHECK_S", default=5.0)
# Prometheus `/metrics` of the bridge; 0 turns it off. The workers' port is WORKER_METRICS_PORT (config/celery_app.py).
BRIDGE_METRICS_PORT = env.int("BRIDGE_METRICS_PORT", default=0)

# --- In-flight register (messaging_events/services/inflight.py, docs/reliability.md) ---
# A batch is looked for only once it has been tracked this long. The bridge tracks a batch again at
# every publish attempt, so this must exceed BRIDGE_PUBLISH_RETRY_MAX_S (system check messaging_events.E002).
INFLIGHT_GRACE_S = env.float("INFLIGHT_GRACE_S", default=60.0)
INFLIGHT_MAX_REPUBLISH = env.int("INFLIGHT_MAX_REPUBLISH", default=3)

# --- Event processing -----------------------------------------------------
EVENT_TASK_MAX_RETRIES = env.int("EVENT_TASK_MAX_RETRIES", default=5)
EVENT_TASK_RETRY_BACKOFF_MAX_S = env.int("EVENT_TASK_RETRY_BACKOFF_MAX_S", default=60)
PARKED_EVENT_MAX_AGE_S = env.int("PARKED_EVENT_MAX_AGE_S", default=7 * 24 * 3600)

# --- CRM rules ------------------------------------------------------------
PHONE_DEFAULT_REGION = env("PHONE_DEFAULT_REGION", default="ZA")
HARD_BOUNCE_OPT_OUT_THRESHOLD = env.int("HARD_BOUNCE_OPT_OUT_THRESHOLD", default=2)
HARD_BOUNCE_WINDOW_DAYS = env.int("HARD_BOUNCE_WINDOW_DAYS", default=90)
SMS_OPT_OUT_KEYWORDS = env.list(
    "SMS_OPT_OUT_KEYWORDS",
    default=["STOP", "UNSUBSCRIBE", "STOPALL", "CANCEL", "END", "QUIT", "OPT OUT"],
)
ENGAGEMENT_HALF_LIFE_DAYS = env.float("ENGAGEMENT_HALF_LIFE_DAYS", default=30.0)
ENGAGEMENT_REFRESH_DELAY_S = env.float("ENGAGEMENT_REFRESH_DELAY_S", default=5.0)

# --- Operations -----------------------------------------------------------
STATUS_MAX_WAITING_AGE_S = env.int("STATUS_MAX_WAITING_AGE_S", default=300)
STATUS_MAX_FAILED_JOBS = env.int("STATUS_MAX_FAILED_JOBS", default=0)
STATUS_MAX_QUEUE_DEPTH = env.int("STATUS_MAX_QUEUE_DEPTH", default=100_000)
STATUS_MAX_PARKED_AGE_S = env.int("STATUS_MAX_PARKED_AGE_S", default=24 * 3600)
# A batch published and still unfinished after this long: no worker is applying it (down, stuck after a
# broker outage, or far behind). Above the visibility timeout (600 s), after which a crashed worker's batch
# runs again, and the longest retry countdown (60 s).
STATUS_MAX_INFLIGHT_AGE_S = env.int("STATUS_MAX_INFLIGHT_AGE_S", default=900)
FLOWER_BASIC_AUTH = env("FLOWER_BASIC_AUTH", default="")

# --- Error tracking -------------------------------------------------------
# Sentry, with the Django and Celery integrations, when SENTRY_DSN is set. Never personal data: see
# messaging_events/error_tracking.py.
SENTRY_DSN = env("SENTRY_DSN", default="")
if SENTRY_DSN:
    from messaging_events.error_tracking import init_error_tracking

    init_error_tracking(
        SENTRY_DSN,
        environment=env("SENTRY_ENVIRONMENT", default="production"),
        release=env("SENTRY_RELEASE", default=None),
    )
