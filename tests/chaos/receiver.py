"""The customers' side of the team webhooks during a chaos run: one HTTP server, one path per
team (`/hooks/<slug>`), verifying every signature with the README's snippet and processing
each `Webhook-Id` once (delivery is at least once; the receiver de-duplicates).

`trap()` lets the fault injector catch the next delivery in the act: the request is processed,
then held unanswered while the Celery worker sending it is killed, which is a kill mid-task by
construction (the task is blocked in its POST).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.lifecycle.receiver import verify_webhook


class WebhookReceiver:
    def __init__(self, *, delay: float = 0.02) -> None:
        self.delay = delay  # each answer takes this long: a delivery task is never instant
        self.secrets: dict[str, str] = {}  # team slug -> endpoint signing secret
        self.received: Counter[str] = Counter()  # Webhook-Id -> requests carrying it
        self.processed: dict[str, dict] = {}  # Webhook-Id -> the event, processed once
        self.bad_signatures = 0
        self.unknown_paths = 0
        self._lock = threading.Lock()
        self._trap_armed = False
        self._trapped = threading.Event()
        self._release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    # ---- the fault injector's handle ---------------------------------------------------------

    def trap(self, timeout: float) -> bool:
        """Hold the next delivery unanswered; True once one is held (within `timeout`)."""
        with self._lock:
            self._trapped.clear()
            self._release.clear()
            self._trap_armed = True
        caught = self._trapped.wait(timeout)
        if not caught:
            with self._lock:
                self._trap_armed = False
        return caught

    def release(self) -> None:
        self._release.set()

    # ---- processing ---------------------------------------------------------------------------

    def _process(self, slug: str, headers, body: bytes) -> int:
        secret = self.secrets.get(slug)
        if secret is None:
            with self._lock:
                self.unknown_paths += 1
            return 404
        if not verify_webhook(secret, headers, body):
            with self._lock:
                self.bad_signatures += 1
            return 400
        event_id = headers.get("Webhook-Id", "")
        event = json.loads(body)
        with self._lock:
            self.received[event_id] += 1
            if event_id not in self.processed:  # de-duplicate on Webhook-Id
                self.processed[event_id] = {"team": slug, **event}
        return 200

    def _hold_if_trapped(self) -> None:
        with self._lock:
            armed, self._trap_armed = self._trap_armed, False
        if armed:
            self._trapped.set()
            self._release.wait(60)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.strip("/").split("/")
                slug = parts[1] if len(parts) == 2 and parts[0] == "hooks" else ""
                status = receiver._process(slug, self.headers, body)
                receiver._hold_if_trapped()
                time.sleep(receiver.delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the sender died while we held the request
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
