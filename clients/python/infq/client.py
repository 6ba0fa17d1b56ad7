"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import tenacity

from . import _core, errors
from ._core import Op, Upload
from .types import Batch, Job, Model

T = TypeVar("T")


class Client:
    """A client of one infq deployment.

    ``url`` and ``api_key`` default to ``INFQ_URL`` and ``INFQ_API_KEY``.
    Calls that may be sent twice (reads, and submissions, which always
    carry an ``Idempotency-Key``) are retried on ``429``, ``503`` and lost
    connections, honouring ``Retry-After``, up to ``retries`` tries.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 6,
        http: httpx.Client | None = None,
    ) -> None:
        self.url, key = _core.settings(url, api_key)
        self._http = http or httpx.Client(
            base_url=self.url, headers=_core.headers(key), timeout=timeout
        )
        self._retries = retries
        self.batches = Batches(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending -----------------------------------------------------

    def _send_once(self, op: Op[Any], stream: bool = False) -> httpx.Response:
        req = self._http.build_request(
            op.method,
            op.path,
            params=op.params or None,
            json=op.json,
            headers=op.headers or None,
            content=op.content() if op.content else None,
        )
        try:
            resp = self._http.send(req, stream=stream)
        except httpx.TransportError as e:
            raise e
        if stream and not resp.is_success:
            resp.read()
        if not resp.is_success:
            err = errors.from_response(resp)
            if isinstance(err, errors.Retryable):
                raise err
        return resp

    def _response(self, op: Op[Any], stream: bool = False) -> httpx.Response:
        attempts = self._retries if op.retryable else 1
        try:
            for attempt in tenacity.Retrying(**_core.retry_policy(attempts)):
                with attempt:
                    return self._send_once(op, stream)
        except httpx.TransportError as e:
            raise _core.transport_error(e) from e
        raise AssertionError("unreachable")

    def _call(self, op: Op[T]) -> T:
        return op.parse(self._response(op))

    # -- jobs --------------------------------------------------------

    def submit(
        self,
        model: str,
        inputs: Any,
        *,
        priority: str | None = None,
        deadline_ms: int | None = None,
        metadata: dict[str, Any] | None = None,
        webhook_url: str | None = None,
        explain: bool = False,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submits a job; its :class:`Job` once the broker holds it."""
        return self._call(
            _core.submit(
                model,
                inputs,
                priority=priority,
                deadline_ms=deadline_ms,
                metadata=metadata,
                webhook_url=webhook_url,
                explain=explain,
                idempotency_key=idempotency_key,
            )
        )

    def get(self, id: str, wait: float | None = None) -> Job:
        """The job; with ``wait``, after at most that many seconds of waiting
        for it to end (one long-poll)."""
        return self._call(_core.get_job(id, wait))

    def wait(self, id: str, timeout: float | None = None) -> Job:
        """Long-polls until the job has ended; raises :class:`TimeoutError`
        after ``timeout`` seconds (never, if ``None``)."""
        until = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _core.LONG_POLL_SECS if until is None else until - time.monotonic()
            job = self.get(id, wait=max(0.1, min(left, _core.LONG_POLL_SECS)))
            if job.done:
                return job
            if until is not None and time.monotonic() >= until:
                raise TimeoutError(f"job {id} is still {job.status} after {timeout} s")

    def cancel(self, id: str) -> Job:
        """Cancels a job that is still queued (:class:`~infq.errors.Conflict`
        once it runs or ended)."""
        return self._call(_core.cancel_job(id))

    def delete(self, id: str) -> None:
        """Erases the job at once."""
        self._call(_core.delete_job(id))

    def models(self) -> list[Model]:
        """Every model version the deployment serves, with its schema."""
        return self._call(_core.models())

    def deliveries(self, id: str, *, batch: bool = False) -> Any:
        """The webhook event of a job (or batch) with every attempt."""
        return self._call(_core.deliveries("batches" if batch else "jobs", id))

    def retry_delivery(self, id: str, event: str, *, batch: bool = False) -> Any:
        """Sends a job's (or batch's) webhook event again."""
        return self._call(_core.retry_delivery("batches" if batch else "jobs", id, event))


class Batches:
    """Bulk batches: ``client.batches``."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(
        self,
        upload: Upload,
        model: str,
        *,
        format: str | None = None,
        passthrough: list[str] | str | None = None,
        explain: bool = False,
        webhook_url: str | None = None,
        progress_interval_secs: int | None = None,
        delimiter: str | None = None,
        idempotency_key: str | None = None,
    ) -> Batch:
        """Uploads a bulk file (a path, bytes or a binary file), streamed;
        the :class:`Batch` once the broker holds every row."""
        return self._c._call(
            _core.create_batch(
                upload,
                model,
                format=format,
                passthrough=passthrough,
                explain=explain,
                webhook_url=webhook_url,
                progress_interval_secs=progress_interval_secs,
                delimiter=delimiter,
                idempotency_key=idempotency_key,
            )
        )

    def get(self, id: str, wait: float | None = None) -> Batch:
        return self._c._call(_core.get_batch(id, wait))

    def wait(self, id: str, timeout: float | None = None, *, progress: bool = True) -> Batch:
        """Long-polls until the batch has ended, with a progress bar when
        ``progress`` and tqdm is installed."""
        from ._progress import bar

        until = None if timeout is None else time.monotonic() + timeout
        b = self.get(id)
        with bar(b, progress) as update:
            while not b.done:
                if until is not None and time.monotonic() >= until:
                    raise TimeoutError(f"batch {id} is still {b.status} after {timeout} s")
                left = 2.0 if until is None else min(2.0, max(0.1, until - time.monotonic()))
                b = self.get(id, wait=left)
                update(b)
        return b

    def results(
        self,
        id: str,
        *,
        format: str = "jsonl",
        out: str | Path | IO[bytes] | None = None,
        partial: bool = False,
    ) -> list[dict[str, Any]] | None:
        """The batch's results: written to ``out`` (a path or binary file,
        streamed) in ``format``, or returned as rows (JSONL) when no
        ``out`` is given."""
        params = _core.results_params(format if out is not None else "jsonl", partial)
        op: Op[None] = Op("GET", f"/v1/batches/{id}/results", lambda r: None, params=params)
        resp = self._c._response(op, stream=True)
        try:
            _core.checked(resp)
            if out is None:
                import json

                return [json.loads(line) for line in resp.iter_lines() if line.strip()]
            if isinstance(out, (str, Path)):
                with open(out, "wb") as f:
                    _copy(resp.iter_bytes(), f)
            else:
                _copy(resp.iter_bytes(), out)
            return None
        finally:
            resp.close()

    def cancel(self, id: str) -> Batch:
        return self._c._call(_core.cancel_batch(id))

    def delete(self, id: str) -> None:
        self._c._call(_core.delete_batch(id))


def _copy(chunks: Iterator[bytes], f: IO[bytes]) -> None:
    for chunk in chunks:
        f.write(chunk)
