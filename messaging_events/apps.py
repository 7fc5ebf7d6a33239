from django.apps import AppConfig


class MessagingEventsConfig(AppConfig):
    name = "messaging_events"
    verbose_name = "Messaging events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from messaging_events import checks  # noqa: F401  (registers the system checks)
