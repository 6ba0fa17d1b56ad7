"""Verifying infq's webhook events (Standard Webhooks), with the
``standardwebhooks`` package."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from .types import Batch, Event, Job

__all__ = ["VerificationError", "verify"]


class VerificationError(Exception):
    """The request is not a genuine event signed with the secret."""


def verify(body: bytes | str, headers: Mapping[str, str], secret: str) -> Event:
    """Checks the signature of a received event (``webhook-id``,
    ``webhook-timestamp``, ``webhook-signature`` headers, under the
    tenant's ``whsec_...`` secret) and returns it typed; raises
    :class:`VerificationError` otherwise."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw = body if isinstance(body, str) else body.decode("utf-8")
    try:
        payload: Any = Webhook(secret).verify(raw, lowered)
    except WebhookVerificationError as e:
        raise VerificationError(str(e)) from e
    if not isinstance(payload, dict):
        payload = json.loads(raw)
    kind = str(payload.get("type", ""))
    data = payload.get("data") or {}
    subject: Job | Batch = Job.from_json(data) if kind.startswith("job.") else Batch.from_json(data)
    seq = data.get("sequence") if kind == "batch.progress" else None
    return Event(
        id=lowered.get("webhook-id", ""),
        type=kind,
        timestamp=str(payload.get("timestamp", "")),
        data=subject,
        sequence=seq if isinstance(seq, int) else None,
    )
