"""What can go wrong, in the engine's own words; the web layer maps each to a status.

A refused change raises one of these inside the transaction, so nothing it did is kept.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


class DomainError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class Unauthorised(DomainError):
    status = 401
    title = "Not signed in"


class Forbidden(DomainError):
    status = 403
    title = "Not allowed"


class ReasonRequired(Forbidden):
    """The record is outside the caller's need-to-know, but policy lets them open it
    ("break-glass") once they give a reason."""

    title = "A reason is needed to open this record"


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class StaleVersion(Conflict):
    title = "Someone else changed this case first"


class NotValidNow(Conflict):
    title = "That event is not valid in the case's current state"


class InvalidData(DomainError):
    status = 422
    title = "The data is not valid"

    def __init__(self, errors: list[FieldError] | FieldError, detail: str | None = None):
        self.errors = [errors] if isinstance(errors, FieldError) else list(errors)
        super().__init__(detail or "; ".join(f"{e.field}: {e.reason}" for e in self.errors))


class Locked(DomainError):
    status = 429
    title = "Too many failed sign-ins"

    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail)
        self.retry_after = retry_after


class DefinitionError(Exception):
    """A workflow or policy file is invalid; start-up stops with this message."""

    def __init__(self, path: str, line: int | None, field: str, reason: str):
        self.path, self.line, self.field, self.reason = path, line, field, reason
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {field}: {reason}")
