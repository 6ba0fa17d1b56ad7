"""The asynchronous client: :class:`AsyncClient` has the methods of
:class:`infq.Client`, as coroutines."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import anyio
import httpx
import tenacity

from . import _core, errors
from ._core import Op, Upload
from .types import Batch, Job, Model

T = TypeVar("T")


async def _aiter(chunks: Iterator[bytes] | bytes) -> AsyncIterator[bytes]:
    """An upload's chunks, each read off the event loop."""
    if isinstance(chunks, bytes):
        yield chunks
        return
    done = object()
    while True:
        chunk = await anyio.to_thread.run_sync(next, chunks, done)
        if chunk is done:
            return
        assert isinstance(chunk, bytes)
        yield chunk


class AsyncClient:
    """The asynchronous :class:`infq.Client`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 6,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url, key = _core.settings(url, api_key)
        self._http = http or httpx.AsyncClient(
            base_url=self.url,
            headers=_core.headers(key),
            timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self._retries = retries
        self.batches = AsyncBatches(self)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send_once(self, op: Op[Any], stream: bool = False) -> httpx.Response:
        content = _aiter(op.content()) if op.content else None
        req = self._http.build_request(
            op.method,
            op.path,
            params=op.params or None,
            json=op.json,
            headers=op.headers or None,
            content=content,
        )
        resp = await self._http.send(req, stream=stream)
        if stream and not resp.is_success:
            await resp.aread()
        if not resp.is_success:
            err = errors.from_response(resp)
            if isinstance(err, errors.Retryable):
                raise err
        return resp

    async def _response(self, op: Op[Any], stream: bool = False) -> httpx.Response:
        attempts = self._retries if op.retryable else 1
        try:
            async for attempt in tenacity.AsyncRetrying(**_core.retry_policy(attempts)):
                with attempt:
                    return await self._send_once(op, stream)
        except httpx.TransportError as e:
            raise _core.transport_error(e) from e
        raise AssertionError("unreachable")

    async def _call(self, op: Op[T]) -> T:
        return op.parse(await self._response(op))

    async def submit(
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
        return await self._call(
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

    async def get(self, id: str, wait: float | None = None) -> Job:
        return await self._call(_core.get_job(id, wait))

    async def wait(self, id: str, timeout: float | None = None) -> Job:
        until = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _core.LONG_POLL_SECS if until is None else until - time.monotonic()
            job = await self.get(id, wait=max(0.1, min(left, _core.LONG_POLL_SECS)))
            if job.done:
                return job
            if until is not None and time.monotonic() >= until:
                raise TimeoutError(f"job {id} is still {job.status} after {timeout} s")

    async def cancel(self, id: str) -> Job:
        return await self._call(_core.cancel_job(id))

    async def delete(self, id: str) -> None:
        await self._call(_core.delete_job(id))

    async def models(self) -> list[Model]:
        return await self._call(_core.models())

    async def deliveries(self, id: str, *, batch: bool = False) -> Any:
        return await self._call(_core.deliveries("batches" if batch else "jobs", id))

    async def retry_delivery(self, id: str, event: str, *, batch: bool = False) -> Any:
        return await self._call(_core.retry_delivery("batches" if batch else "jobs", id, event))


class AsyncBatches:
    """Bulk batches: ``client.batches``."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(
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
        return await self._c._call(
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

    async def get(self, id: str, wait: float | None = None) -> Batch:
        return await self._c._call(_core.get_batch(id, wait))

    async def wait(self, id: str, timeout: float | None = None) -> Batch:
        until = None if timeout is None else time.monotonic() + timeout
        b = await self.get(id)
        while not b.done:
            if until is not None and time.monotonic() >= until:
                raise TimeoutError(f"batch {id} is still {b.status} after {timeout} s")
            left = 2.0 if until is None else min(2.0, max(0.1, until - time.monotonic()))
            b = await self.get(id, wait=left)
        return b

    async def results(
        self,
        id: str,
        *,
        format: str = "jsonl",
        out: str | Path | IO[bytes] | None = None,
        partial: bool = False,
    ) -> list[dict[str, Any]] | None:
        params = _core.results_params(format if out is not None else "jsonl", partial)
        op: Op[None] = Op("GET", f"/v1/batches/{id}/results", lambda r: None, params=params)
        resp = await self._c._response(op, stream=True)
        try:
            _core.checked(resp)
            if out is None:
                return [json.loads(line) async for line in resp.aiter_lines() if line.strip()]
            if isinstance(out, (str, Path)):
                with open(out, "wb") as f:
                    async for chunk in resp.aiter_bytes():
                        f.write(chunk)
            else:
                async for chunk in resp.aiter_bytes():
                    out.write(chunk)
            return None
        finally:
            await resp.aclose()

    async def cancel(self, id: str) -> Batch:
        return await self._c._call(_core.cancel_batch(id))

    async def delete(self, id: str) -> None:
        await self._c._call(_core.delete_batch(id))
