from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import infq
from infq.webhooks import VerificationError, verify


@pytest.fixture()
def receiver() -> Iterator[tuple[str, list[tuple[bytes, dict[str, str]]]]]:
    got: list[tuple[bytes, dict[str, str]]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append((body, dict(self.headers.items())))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()


def test_a_real_callback_verifies_and_a_tampered_one_does_not(
    client: infq.Client, receiver: tuple[str, list[tuple[bytes, dict[str, str]]]]
) -> None:
    import time

    hook, got = receiver
    secret = os.environ["INFQ_TEST_WEBHOOK_SECRET"]
    job = client.submit("credit-default", [0, 1500.0, 40000.0], webhook_url=hook)
    until = time.monotonic() + 30
    while not got and time.monotonic() < until:
        time.sleep(0.05)
    assert got, "no callback"
    body, headers = got[0]
    event = verify(body, headers, secret)
    assert event.type == "job.succeeded"
    assert isinstance(event.data, infq.Job) and event.data.id == job.id
    assert event.id == headers["webhook-id"]
    forged = json.loads(body)
    forged["data"]["output"]["default_probability"] = 0.0
    with pytest.raises(VerificationError):
        verify(json.dumps(forged), headers, secret)
    with pytest.raises(VerificationError):
        verify(body, headers, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    d = client.deliveries(job.id)
    assert d["events"][0]["type"] == "job.succeeded"
    # Sent again by hand: the same event, under the same id.
    r = client.retry_delivery(job.id, "job.succeeded")
    assert r["webhook_id"] == headers["webhook-id"]
    until = time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < until:
        time.sleep(0.05)
    again = verify(got[1][0], got[1][1], secret)
    assert (again.id, again.type) == (event.id, event.type)
