"""The HTTP loader against a real keep-alive server on loopback: it counts answers, reads
bodies of both framings, and counts non-2xx answers as errors (never as throughput)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.load import run_load


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the query servers speak
    seen: list[dict[str, object]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen.append(body)
        status = 500 if body.get("fail") else 200
        if self.path == "/chunked":
            self.send_response(status)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"status":', b'"ok"}'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        payload = b'{"status":"ok"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    Handler.seen = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.mark.parametrize("path", ["/plain", "/chunked"])
def test_load_counts_answers_and_cycles_bodies(server: str, path: str) -> None:
    bodies = [{"k": i} for i in range(5)]
    res = run_load(f"{server}{path}", bodies, concurrency=3, duration_s=0.5, warmup_s=0.1)
    assert res.errors == 0, res.first_error
    assert res.requests > 10
    assert res.statuses == {"200": res.requests}
    assert 0 < res.p50_ms <= res.p99_ms
    assert {b["k"] for b in Handler.seen} == set(range(5))  # type: ignore[index]


def test_load_counts_server_errors_as_errors(server: str) -> None:
    res = run_load(f"{server}/plain", [{"fail": True}], concurrency=2, duration_s=0.3, warmup_s=0.0)
    assert res.requests == 0
    assert res.errors > 0
    assert res.first_error == "HTTP 500"
