from __future__ import annotations

import asyncio
import os
import time
import uuid

import httpx
import pytest

import infq

ROW = {"student": 0, "balance": 1500.0, "income": 40000.0}


def test_submit_wait_get_cancel_delete(client: infq.Client) -> None:
    job = client.submit("credit-default", ROW, metadata={"ref": "loan-17"})
    assert job.status == "queued" and job.model == "credit-default"
    done = client.wait(job.id, timeout=30)
    assert done.status == "succeeded" and done.done
    assert done.output is not None and 0.0 < done.output["default_probability"] < 1.0
    assert done.metadata == {"ref": "loan-17"}
    assert client.get(job.id).output == done.output
    with pytest.raises(infq.Conflict) as e:
        client.cancel(job.id)
    assert e.value.status == 409 and e.value.code == "conflict"
    client.delete(job.id)
    with pytest.raises(infq.NotFound):
        client.get(job.id)


def test_a_queued_job_is_cancelled(client: infq.Client) -> None:
    # The worker may take it first: then it is a conflict and the job
    # runs; a cancelled one reads back cancelled.
    job = client.submit("credit-default", ROW, priority="bulk")
    try:
        cancelled = client.cancel(job.id)
    except infq.Conflict:
        assert client.wait(job.id, timeout=30).status == "succeeded"
        return
    assert cancelled.status == "cancelled"
    assert client.get(job.id).status == "cancelled"


def test_one_idempotency_key_makes_one_job(client: infq.Client) -> None:
    key = f"py-test-{uuid.uuid4()}"
    a = client.submit("credit-default", ROW, idempotency_key=key)
    b = client.submit("credit-default", ROW, idempotency_key=key)
    assert a.id == b.id
    with pytest.raises(infq.Conflict) as e:
        client.submit("credit-default", [1, 2, 3], idempotency_key=key)
    assert e.value.code == "idempotency_conflict"


def test_errors_are_typed_with_their_details(client: infq.Client, url: str) -> None:
    with pytest.raises(infq.InvalidRequest) as e:
        client.submit("credit-default", {"student": 0, "balance": "lots"})
    assert e.value.status == 422 and e.value.code == "invalid_request"
    fields = {d.field for d in e.value.details}
    assert {"inputs.balance", "inputs.income"} <= fields, e.value.details
    assert "inputs.balance" in str(e.value)
    with pytest.raises(infq.InvalidRequest) as e:
        client.submit("no-such-model", ROW)
    assert e.value.code == "unknown_model"
    with pytest.raises(infq.NotFound):
        client.get(str(uuid.uuid4()))
    with infq.Client(url, "infq_nobody_0000000000000000000000000000000000") as nobody:
        with pytest.raises(infq.Unauthorized):
            nobody.models()


def test_models_lists_each_version_with_its_digest(client: infq.Client) -> None:
    models = client.models()
    assert {"credit-default", "txn-risk"} <= {m.name for m in models}
    credit = next(m for m in models if m.name == "credit-default" and m.default)
    assert credit.sha256 is not None and len(credit.sha256) == 64
    assert [f.name for f in credit.inputs] == ["student", "balance", "income"]
    assert credit.inputs[0].categories == {"No": 0, "Yes": 1}
    assert [o.name for o in credit.outputs] == ["default_probability"]


def test_a_tiny_rate_is_waited_out_with_no_duplicate(url: str) -> None:
    """A tenant allowed 2 submissions a second, burst 1: a burst of 6 is
    answered 429 with Retry-After, which the client honours."""
    slow = os.environ["INFQ_TEST_SLOW_KEY"]
    with infq.Client(url, slow, retries=20) as c:
        ids = [c.submit("credit-default", [0, 100.0 * i, 20000.0]).id for i in range(6)]
        assert len(set(ids)) == 6
        ends = [c.wait(i, timeout=30) for i in ids]
    assert {j.status for j in ends} == {"succeeded"}
    # Without retries the same burst meets the limit, typed.
    with infq.Client(url, slow, retries=1) as c:
        with pytest.raises(infq.RateLimited) as e:
            for i in range(6):
                c.submit("credit-default", [0, 1.0 * i, 1.0])
    assert e.value.retry_after is not None and e.value.retry_after >= 0


def test_a_thousand_concurrent_async_submissions(url: str) -> None:
    async def main() -> list[infq.Job]:
        async with infq.AsyncClient(url, os.environ["INFQ_API_KEY"]) as a:
            jobs = await asyncio.gather(
                *(a.submit("credit-default", [i % 2, 10.0 * i, 30000.0]) for i in range(1000))
            )
            assert len({j.id for j in jobs}) == 1000
            return list(await asyncio.gather(*(a.wait(j.id, timeout=120) for j in jobs)))

    ends = asyncio.run(main())
    assert {j.status for j in ends} == {"succeeded"}
    assert len({j.id for j in ends}) == 1000


def test_a_broker_outage_is_waited_out_with_no_duplicate(url: str) -> None:
    """The producer's broker connection is cut for 3 s: submissions meanwhile
    are answered 503 with Retry-After, which the client retries under the
    same Idempotency-Key until one is taken; that key then names the one
    job."""
    seen: list[int] = []
    http = httpx.Client(
        base_url=url,
        headers={"authorization": f"Bearer {os.environ['INFQ_API_KEY']}"},
        timeout=30,
        event_hooks={"response": [lambda r: seen.append(r.status_code)]},
    )
    httpx.post(f"{os.environ['INFQ_TEST_BROKER_RELAY']}/cut", params={"ms": 3000})
    key = f"py-outage-{uuid.uuid4()}"
    with infq.Client(url, http=http, retries=12) as c:
        job = c.submit("credit-default", ROW, idempotency_key=key)
        assert 503 in seen and seen[-1] == 202, seen
        assert c.wait(job.id, timeout=60).status == "succeeded"
        again = c.submit("credit-default", ROW, idempotency_key=key)
    assert again.id == job.id
    # Without retries, an outage is typed.
    httpx.post(f"{os.environ['INFQ_TEST_BROKER_RELAY']}/cut", params={"ms": 3000})
    with infq.Client(url, os.environ["INFQ_API_KEY"], retries=1) as c:
        with pytest.raises(infq.Unavailable) as e:
            c.submit("credit-default", ROW)
    assert e.value.status == 503 and e.value.retry_after is not None
    time.sleep(3)
