"""The BullMQ → Celery bridge: consumes `crm-events` with the bullmq Worker, publishes batches to Celery."""
