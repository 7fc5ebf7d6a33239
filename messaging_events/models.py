from django.db import models


class InboundEventStatus(models.TextChoices):
    RECEIVED = "received", "received"  # row written, handler not yet finished (never seen after commit)
    APPLIED = "applied", "applied"
    IGNORED = "ignored", "ignored"
    REJECTED = "rejected", "rejected"
    PARKED = "parked", "parked"
    FAILED = "failed", "failed"


FINAL_STATUSES = frozenset({InboundEventStatus.APPLIED, InboundEventStatus.IGNORED, InboundEventStatus.REJECTED})
REPLAYABLE_STATUSES = frozenset({InboundEventStatus.FAILED, InboundEventStatus.PARKED, InboundEventStatus.REJECTED})


class InboundEvent(models.Model):
    """The inbox: one row per event identity, whatever the number of deliveries.

    `tenant_ref` is the tenant id exactly as the producer stated it ("" when the job
    named none). Together with `idempotency_key` it is the event's identity and is
    known from the job alone, so a redelivery always finds its row; `tenant` is the
    tenant the event resolved to, which for message events may come from the contact link.
    """

    tenant = models.ForeignKey("crm.Tenant", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    tenant_ref = models.CharField(max_length=128, blank=True, default="")
    idempotency_key = models.CharField(max_length=128)
    event_type = models.CharField(max_length=64, db_index=True)
    priority = models.CharField(max_length=8)
    messaging_contact_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
    bullmq_job_id = models.CharField(max_length=64, blank=True, default="")
    job_name = models.CharField(max_length=128, blank=True, default="")
    raw_data = models.JSONField(null=True, blank=True)
    job_timestamp = models.DateTimeField(null=True, blank=True, help_text="BullMQ job timestamp.")
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=InboundEventStatus.choices, db_index=True)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker tried to apply it.")
    deliveries = models.PositiveIntegerField(default=1, help_text="Times it reached a worker.")
    job_attempts = models.PositiveIntegerField(default=0, help_text="BullMQ attemptsMade when last bridged.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant_ref", "idempotency_key"], name="inbound_event_identity"),
        ]
        indexes = [
            models.Index(fields=["status", "received_at"], name="inbound_status_received"),
            models.Index(fields=["tenant", "status"], name="inbound_tenant_status"),
        ]
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.idempotency_key} [{self.status}]"
