from config.settings.base import *  # noqa: F403
from config.settings.base import env

SECRET_KEY = "test-only"  # noqa: S105 - the test settings never serve traffic
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# A short delay keeps score-refresh tests fast; the coalescing still holds.
ENGAGEMENT_REFRESH_DELAY_S = env.float("ENGAGEMENT_REFRESH_DELAY_S", default=0.5)
