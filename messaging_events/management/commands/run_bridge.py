from django.core.management.base import BaseCommand

from messaging_events.bridge.runner import BridgeConfig, run_forever


class Command(BaseCommand):
    help = "Consume the Messaging service's BullMQ queue and publish its jobs to the Celery queues by priority."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, help="Overrides BRIDGE_BATCH_SIZE.")
        parser.add_argument("--concurrency", type=int, help="Overrides BRIDGE_CONCURRENCY.")

    def handle(self, *args, **options) -> None:
        config = BridgeConfig.from_settings()
        overrides = {}
        if options["batch_size"]:
            overrides["batch_size"] = options["batch_size"]
        if options["concurrency"]:
            overrides["concurrency"] = options["concurrency"]
        if overrides:
            config = BridgeConfig(**{**config.__dict__, **overrides})
        run_forever(config)
