class ApplicationError(Exception):
    """A business rule refused the operation. Callers record or show `message`; it is safe to display."""

    def __init__(self, message: str, extra: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class TenantMismatch(ApplicationError):
    pass
