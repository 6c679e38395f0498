"""A real HTTP notification receiver on loopback (a threaded http.server), recording what it
gets; tests tell it how to answer (status codes, delays) and wait for what they expect."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Received:
    def __init__(self, path: str, headers: dict[str, str], body: Any, at: float) -> None:
        self.path = path
        self.headers = headers
        self.body = body
        self.at = at


class Receiver:
    """``url`` takes notifications; ``answers`` is a list of status codes used one per request
    (then ``status``); ``delay`` seconds are slept before answering (a slow endpoint);
    ``before_answer`` is called with each notification's body before it is answered (what a
    receiver does as soon as it gets one)."""

    def __init__(
        self,
        status: int = 200,
        delay: float = 0.0,
        before_answer: Callable[[Any], None] | None = None,
    ) -> None:
        self.status = status
        self.delay = delay
        self.before_answer = before_answer
        self.answers: list[int] = []
        self.received: list[Received] = []
        self.attempts = 0
        self._cond = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                if owner.delay:
                    time.sleep(owner.delay)
                if owner.before_answer is not None:
                    owner.before_answer(json.loads(raw))
                with owner._cond:
                    owner.attempts += 1
                    status = owner.answers.pop(0) if owner.answers else owner.status
                    if 200 <= status < 300:
                        owner.received.append(
                            Received(
                                self.path,
                                {k.lower(): v for k, v in self.headers.items()},
                                json.loads(raw),
                                time.monotonic(),
                            )
                        )
                    owner._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/notify"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _wait(self, count: int, timeout: float, items: Callable[[], list], what: str) -> list:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = items()
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"got {len(got)} {what} of {count} expected")
                self._cond.wait(left)

    def wait_for(
        self, count: int, timeout: float = 10.0, what: Callable[[Received], bool] | None = None
    ) -> list[Received]:
        """Wait until ``count`` notifications (matching ``what``) arrived; return them all."""
        return self._wait(
            count,
            timeout,
            lambda: [r for r in self.received if what is None or what(r)],
            "notifications",
        )

    def entities(self) -> list[dict[str, Any]]:
        """Every entity notified so far, in the order they arrived (a notification may carry
        several: the hub merges waiting ones)."""
        with self._cond:
            return [e for r in self.received for e in r.body["data"]]

    def wait_entities(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``count`` entities were notified, in however many notifications."""
        return self._wait(
            count,
            timeout,
            lambda: [e for r in self.received for e in r.body["data"]],
            "entities notified",
        )

    def bodies(self) -> list[dict[str, Any]]:
        with self._cond:
            return [r.body for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
