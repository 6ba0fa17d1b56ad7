"""A small receiver of infq's webhooks: verifies each request with the
tenant's secret and prints the event.

    INFQ_WEBHOOK_SECRET=whsec_... python examples/receiver.py 8000

Then submit with ``webhook_url=https://<this host>/hook`` (infq sends only
to public ``https`` addresses unless ``webhooks.allow_http`` is set).
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from infq import Batch
from infq.webhooks import VerificationError, verify

SECRET = os.environ["INFQ_WEBHOOK_SECRET"]


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            event = verify(body, dict(self.headers.items()), SECRET)
        except VerificationError as e:
            self.send_response(400)
            self.end_headers()
            print(f"refused: {e}", file=sys.stderr)
            return
        # Answer at once; infq retries anything but a 2xx.
        self.send_response(204)
        self.end_headers()
        if isinstance(event.data, Batch):
            b = event.data
            print(f"{event.type} {b.id}: {b.processed}/{b.total} rows, eta {b.eta_seconds} s")
        else:
            print(f"{event.type} {event.data.id}: {event.data.output or event.data.error}")

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    ThreadingHTTPServer(("0.0.0.0", port), Hook).serve_forever()
