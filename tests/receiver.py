"""A real HTTP server in the test process that plays a webhook receiver, good or bad."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the body was read


@dataclass
class Receiver:
    """Answers each request with the next behaviour queued (default: 204), and records it.

    Behaviours: an HTTP status (int), "hang" (sleep past any timeout), "close" (drop the
    connection without answering), "redirect" (302 to itself, forever), "garbage" (200 with a
    body that is not JSON, streamed slowly).
    """

    behaviours: deque = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    default: object = 204
    url: str = ""

    def then(self, *behaviours: object) -> Receiver:
        self.behaviours.extend(behaviours)
        return self

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} requests arrived, {count} expected")
            time.sleep(0.01)
        return self.received


def start_receiver() -> tuple[Receiver, ThreadingHTTPServer]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            receiver.received.append(
                Received(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                )
            )
            behaviour = receiver.behaviours.popleft() if receiver.behaviours else receiver.default
            if behaviour == "hang":
                time.sleep(5)
                return
            if behaviour == "close":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if behaviour == "redirect":
                self.send_response(302)
                self.send_header("location", self.path)
                self.end_headers()
                return
            if behaviour == "trickle":  # a header a second, forever (well, for 10 s)
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for number in range(10):
                    self.wfile.write(f"x-slow-{number}: 1\r\n".encode())
                    self.wfile.flush()
                    time.sleep(1)
                return
            if behaviour == "garbage":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"\x00\xffnot json at all" * 100)
                return
            self.send_response(int(behaviour))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server
