"""What the sync and async clients share: each API call as a request
description and a parser of its answer, the retry policy, and the
defaults. No I/O here: :mod:`infq.client` and :mod:`infq.aio` send."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import httpx
import tenacity

from . import errors
from .types import Batch, Job, Model

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
#: Longest single long-poll asked of the server (it caps it too).
LONG_POLL_SECS = 20.0
#: Bytes read from an upload at a time.
UPLOAD_CHUNK = 1 << 20

#: What an upload may be: a path, bytes, or a readable binary file.
Upload = str | os.PathLike[str] | bytes | IO[bytes]


@dataclass
class Op(Generic[T]):
    """One API call: the request and how its answer is read."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: A fresh body for each attempt (uploads), if the call has one.
    content: Callable[[], Iterator[bytes] | bytes] | None = None
    #: Whether sending it twice is harmless (idempotent, or keyed).
    retryable: bool = True


def settings(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The base URL and key: as given, else ``INFQ_URL`` / ``INFQ_API_KEY``."""
    base = url or os.environ.get("INFQ_URL") or DEFAULT_URL
    key = api_key or os.environ.get("INFQ_API_KEY")
    return base.rstrip("/"), key


def headers(api_key: str | None) -> dict[str, str]:
    h = {"user-agent": "infq-python/0.1.0"}
    if api_key:
        h["authorization"] = f"Bearer {api_key}"
    return h


def checked(resp: httpx.Response) -> httpx.Response:
    """The answer if it is a success, else its typed error."""
    if resp.is_success:
        return resp
    raise errors.from_response(resp)


def _job(resp: httpx.Response) -> Job:
    return Job.from_json(checked(resp).json())


def _batch(resp: httpx.Response) -> Batch:
    return Batch.from_json(checked(resp).json())


def _json(resp: httpx.Response) -> Any:
    return checked(resp).json()


def _nothing(resp: httpx.Response) -> None:
    checked(resp)


def new_key() -> str:
    """An ``Idempotency-Key`` for one logical submission."""
    return f"py-{uuid.uuid4()}"


def submit(
    model: str,
    inputs: Any,
    *,
    priority: str | None,
    deadline_ms: int | None,
    metadata: dict[str, Any] | None,
    webhook_url: str | None,
    explain: bool,
    idempotency_key: str | None,
) -> Op[Job]:
    body: dict[str, Any] = {"model": model, "inputs": inputs}
    for k, v in (
        ("priority", priority),
        ("deadline_ms", deadline_ms),
        ("metadata", metadata),
        ("webhook_url", webhook_url),
    ):
        if v is not None:
            body[k] = v
    if explain:
        body["explain"] = True
    # Always keyed: a retry after a lost answer never makes a second job.
    key = idempotency_key or new_key()
    return Op("POST", "/v1/jobs", _job, json=body, headers={"idempotency-key": key})


def get_job(id: str, wait: float | None = None) -> Op[Job]:
    params = {"wait": wait} if wait else {}
    return Op("GET", f"/v1/jobs/{id}", _job, params=params)


def cancel_job(id: str) -> Op[Job]:
    return Op("POST", f"/v1/jobs/{id}/cancel", _job)


def delete_job(id: str) -> Op[None]:
    return Op("DELETE", f"/v1/jobs/{id}", _nothing)


def _models(resp: httpx.Response) -> list[Model]:
    return [Model.from_json(m) for m in checked(resp).json()["models"]]


def models() -> Op[list[Model]]:
    return Op("GET", "/v1/models", _models)


def deliveries(kind: str, id: str) -> Op[Any]:
    return Op("GET", f"/v1/{kind}/{id}/deliveries", _json)


def retry_delivery(kind: str, id: str, event: str) -> Op[Any]:
    return Op("POST", f"/v1/{kind}/{id}/deliveries/{event}/retry", _json)


def _content(upload: Upload) -> Callable[[], Iterator[bytes] | bytes] | None:
    """A fresh body for each attempt of an upload; ``None`` for a file
    object that cannot be read again (it is then sent once)."""
    if isinstance(upload, bytes):
        data = upload
        return lambda: data
    if isinstance(upload, (str, os.PathLike)):
        path = Path(upload)

        def read_path() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(UPLOAD_CHUNK):
                    yield chunk

        return read_path
    f = upload
    if f.seekable():
        start = f.tell()

        def reread() -> Iterator[bytes]:
            f.seek(start)
            while chunk := f.read(UPLOAD_CHUNK):
                yield chunk

        return reread
    return None


CONTENT_TYPES = {
    "csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


def _format_of(upload: Upload, format: str | None) -> str | None:
    if format is not None or not isinstance(upload, (str, os.PathLike)):
        return format
    suffix = Path(upload).suffix.lower()
    return {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}.get(suffix)


def create_batch(
    upload: Upload,
    model: str,
    *,
    format: str | None,
    passthrough: list[str] | str | None,
    explain: bool,
    webhook_url: str | None,
    progress_interval_secs: int | None,
    delimiter: str | None,
    idempotency_key: str | None,
) -> Op[Batch]:
    params: dict[str, Any] = {"model": model}
    fmt = _format_of(upload, format)
    if fmt:
        params["format"] = fmt
    if passthrough:
        params["passthrough"] = (
            passthrough if isinstance(passthrough, str) else ",".join(passthrough)
        )
    if explain:
        params["explain"] = "true"
    if webhook_url:
        params["webhook_url"] = webhook_url
    if progress_interval_secs is not None:
        params["progress_interval_secs"] = progress_interval_secs
    if delimiter:
        params["delimiter"] = delimiter
    content = _content(upload)
    key = idempotency_key or new_key()
    op = Op(
        "POST",
        "/v1/batches",
        _batch,
        params=params,
        headers={
            "idempotency-key": key,
            "content-type": CONTENT_TYPES.get(fmt or "csv", "text/csv"),
        },
        retryable=content is not None,
    )
    if content is None:
        f = upload
        assert not isinstance(f, (bytes, str, os.PathLike))

        def once() -> Iterator[bytes]:
            while chunk := f.read(UPLOAD_CHUNK):
                yield chunk

        op.content = once
    else:
        op.content = content
    return op


def get_batch(id: str, wait: float | None = None) -> Op[Batch]:
    params = {"wait": wait} if wait else {}
    return Op("GET", f"/v1/batches/{id}", _batch, params=params)


def cancel_batch(id: str) -> Op[Batch]:
    return Op("POST", f"/v1/batches/{id}/cancel", _batch)


def delete_batch(id: str) -> Op[None]:
    return Op("DELETE", f"/v1/batches/{id}", _nothing)


def results_params(format: str, partial: bool) -> dict[str, Any]:
    p: dict[str, Any] = {"format": format}
    if partial:
        p["partial"] = "true"
    return p


def _wait_for(state: tenacity.RetryCallState) -> float:
    """The server's ``Retry-After`` when it named one, else exponential
    backoff with jitter."""
    exc = state.outcome.exception() if state.outcome else None
    asked = getattr(exc, "retry_after", None)
    backoff = tenacity.wait_random_exponential(multiplier=0.2, max=10)(state)
    return float(min(asked, 60.0)) if asked is not None else float(backoff)


def retry_policy(attempts: int) -> dict[str, Any]:
    """tenacity's arguments for a retryable call: ``429`` and ``503``
    answers and lost connections, up to ``attempts`` tries."""
    return {
        "retry": tenacity.retry_if_exception_type((errors.Retryable, httpx.TransportError)),
        "wait": _wait_for,
        "stop": tenacity.stop_after_attempt(max(1, attempts)),
        "reraise": True,
    }


def transport_error(e: httpx.TransportError) -> errors.Unavailable:
    return errors.Unavailable(f"no answer from the server: {e}")
