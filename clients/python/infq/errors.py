"""Errors of the infq API, typed from the server's ``error.code``.

Every error answer of the server is ``{"error": {"code", "message",
"details": [{"field", "line", "message"}]}}``; :func:`from_response` turns
one into the matching exception, so callers catch what they can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


@dataclass(frozen=True)
class Detail:
    """One problem of a request: the field (or file line) and what is wrong."""

    message: str
    field: str | None = None
    line: int | None = None


class InfqError(Exception):
    """An error answer of the server (or no answer at all)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: tuple[Detail, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details

    def __str__(self) -> str:
        head = f"{self.status} {self.code}: {self.message}" if self.status else self.message
        lines = [head]
        for d in self.details:
            where = ", ".join(
                p for p in (d.field and f"field {d.field}", d.line and f"line {d.line}") if p
            )
            lines.append(f"  - {where + ': ' if where else ''}{d.message}")
        return "\n".join(lines)


class InvalidRequest(InfqError):
    """``400``/``413``/``422``: the request (body, file, parameters) is refused;
    ``details`` lists every problem."""


class Unauthorized(InfqError):
    """``401``: no API key, or an unknown or revoked one."""


class Forbidden(InfqError):
    """``403``: the key's tenant may not use this route."""


class NotFound(InfqError):
    """``404``: no such job or batch (or it expired)."""


class Conflict(InfqError):
    """``409``: the subject's state does not allow it, or an idempotency key
    was reused with another request."""


class Retryable(InfqError):
    """An answer that may change by itself: ``retry_after`` is the wait the
    server asked for, in seconds, if it named one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimited(Retryable):
    """``429``: over the tenant's rate or quota, or the queue is full."""


class Unavailable(Retryable):
    """``503`` (the broker or Redis cannot take it now), or no answer."""


_BY_STATUS: dict[int, type[InfqError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from datetime import datetime, timezone

    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def from_response(resp: httpx.Response) -> InfqError:
    """The exception an error answer stands for (the body must be read)."""
    code: str | None = None
    message = resp.reason_phrase or f"HTTP {resp.status_code}"
    details: tuple[Detail, ...] = ()
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = err.get("code") if isinstance(err.get("code"), str) else None
        if isinstance(err.get("message"), str):
            message = err["message"]
        raw = err.get("details")
        if isinstance(raw, list):
            details = tuple(
                Detail(
                    message=str(d.get("message", "")),
                    field=d.get("field") if isinstance(d.get("field"), str) else None,
                    line=d.get("line") if isinstance(d.get("line"), int) else None,
                )
                for d in raw
                if isinstance(d, dict)
            )
    cls = _BY_STATUS.get(resp.status_code)
    if cls is None:
        cls = Unavailable if resp.status_code >= 500 else InfqError
    kw: dict[str, Any] = {"status": resp.status_code, "code": code, "details": details}
    if issubclass(cls, Retryable):
        kw["retry_after"] = retry_after(resp.headers.get("retry-after"))
    return cls(message, **kw)
