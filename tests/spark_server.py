"""A local Spark Connect server for the tests and the benchmark, from the full `pyspark` wheel
of the test extra (its jars include the Connect server) and a Java 17 runtime (Debian's
`openjdk-17-jre-headless`, which `make test-servers` installs when `java` is missing).

One server per test session: local mode, a 1 GB driver heap, the UI off, everything bound to
127.0.0.1 (the Connect port is picked free at start unless `port` is given). A server that
does not answer in time is a failure carrying the tail of its log, never a skip.

    python -m tests.spark_server [PORT]   # start one by hand; Ctrl-C stops it
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STARTUP_S = 180.0
STOP_S = 20.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


class SparkStartError(RuntimeError):
    """The server could not be started; the message says why and carries its log tail."""


@dataclass(frozen=True)
class SparkServer:
    remote: str  # sc://127.0.0.1:PORT
    port: int
    pid: int
    work: Path


def spark_home() -> Path:
    """The Spark distribution inside the installed full `pyspark` wheel (not pyspark-client,
    which has no jars)."""
    try:
        import pyspark
    except ImportError as exc:
        raise SparkStartError(
            "pyspark is not installed: run `make install-test` (test extra: pyspark[connect])"
        ) from exc
    home = Path(pyspark.__file__).parent
    if not list((home / "jars").glob("spark-connect_*.jar")):
        raise SparkStartError(
            f"no Spark Connect server jar under {home / 'jars'}: the thin pyspark-client is "
            "installed instead of the full pyspark wheel (pip install -e '.[test]')"
        )
    return home


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise SparkStartError(
            "no `java` on PATH: Spark needs a Java 17 runtime "
            "(`make test-servers` installs Debian's openjdk-17-jre-headless)"
        )
    return java


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when the process that started it
    dies (a test run killed by a timeout leaves no JVM behind; spark-submit execs java)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


@contextlib.contextmanager
def spark_server(port: int | None = None, heap: str = "1g") -> Iterator[SparkServer]:
    """Start a Spark Connect server, yield it once it accepts connections, stop it after."""
    home = spark_home()
    _java()
    port = port or _free_port()
    work = Path(tempfile.mkdtemp(prefix="sluice-spark-"))
    log = work / "server.log"
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(work),
        "SPARK_CONF_DIR": str(work),  # no stray spark-defaults.conf from the machine
    }
    env.pop("PYSPARK_PYTHON", None)
    conf = {
        "spark.master": "local[2]",
        "spark.driver.memory": heap,
        "spark.ui.enabled": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.sql.shuffle.partitions": "4",
        "spark.local.dir": str(work / "tmp"),
        "spark.sql.warehouse.dir": str(work / "warehouse"),
        "spark.sql.session.timeZone": "UTC",
    }
    args = [str(home / "bin" / "spark-submit"), "--class", SERVER_CLASS]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    args += ["--driver-java-options", f"-Dderby.system.home={work}", "spark-internal"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while not _answers(port):
            if proc.poll() is not None:
                raise SparkStartError(
                    f"the Spark Connect server exited with {proc.returncode}:\n{_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise SparkStartError(
                    f"the Spark Connect server did not listen on {port} within "
                    f"{STARTUP_S:.0f}s:\n{_tail(log)}"
                )
            time.sleep(0.25)
        yield SparkServer(remote=f"sc://127.0.0.1:{port}", port=port, pid=proc.pid, work=work)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    with spark_server(int(sys.argv[1]) if len(sys.argv) > 1 else None) as server:
        print(f"Spark Connect on {server.remote} (pid {server.pid}); Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
