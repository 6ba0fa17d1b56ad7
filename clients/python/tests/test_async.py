"""Every method of the async client, against the live server."""

from __future__ import annotations

import asyncio
import io
import os

import pytest

import infq

CSV = b"student,balance,income\n" + b"".join(
    f"{i % 2},{i * 3}.5,{10000 + i * 50}\n".encode() for i in range(500)
)


def test_every_async_method(url: str) -> None:
    async def main() -> None:
        async with infq.AsyncClient(url, os.environ["INFQ_API_KEY"]) as a:
            models = await a.models()
            assert {m.name for m in models} >= {"credit-default"}
            job = await a.submit("credit-default", [0, 1500.0, 40000.0], metadata={"k": 1})
            done = await a.wait(job.id, timeout=30)
            assert done.status == "succeeded" and done.metadata == {"k": 1}
            assert (await a.get(job.id, wait=1)).output == done.output
            with pytest.raises(infq.Conflict):
                await a.cancel(job.id)
            # It asked for no webhook: no event.
            assert (await a.deliveries(job.id))["events"] == []
            await a.delete(job.id)
            with pytest.raises(infq.NotFound):
                await a.get(job.id)

            b = await a.batches.create(CSV, "credit-default", format="csv")
            assert (await a.batches.get(b.id)).total == 500
            end = await a.batches.wait(b.id, timeout=60)
            assert (end.status, end.succeeded) == ("succeeded", 500)
            rows = await a.batches.results(b.id)
            assert rows is not None and [r["row"] for r in rows] == list(range(1, 501))
            buf = io.BytesIO()
            await a.batches.results(b.id, format="csv", out=buf)
            assert buf.getvalue().count(b"\n") == 501
            assert (await a.batches.results(b.id, partial=True)) == rows
            with pytest.raises(infq.Conflict):
                await a.batches.cancel(b.id)
            await a.batches.delete(b.id)
            with pytest.raises(infq.NotFound):
                await a.batches.get(b.id)
            with pytest.raises(infq.InvalidRequest) as e:
                await a.submit("credit-default", {"student": 3})
            assert any(d.field == "inputs.student" for d in e.value.details)
            with pytest.raises(infq.NotFound):
                await a.retry_delivery(job.id, "job.succeeded")

    asyncio.run(main())
