"""Serve the app with hypercorn (uvloop workers). Several workers each build the app from
the config path in SLUICE_CONFIG plus the `server` settings given on the command line
(SLUICE_SERVER_SETTINGS, JSON): the environment is only how a worker process learns what the
parent was told; below this bootstrap every setting is passed in. State shared across
workers lives in the stores."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
from hypercorn.config import Config as HypercornConfig
from hypercorn.run import run
from starlette.types import ASGIApp

from api.metrics import MULTIPROC_ENV
from engine.config import Config, ServerConfig, load_config

log = logging.getLogger("sluice.server")

CONFIG_ENV = "SLUICE_CONFIG"
BIND_ENV = "SLUICE_BIND_HOST"
SERVER_SETTINGS_ENV = "SLUICE_SERVER_SETTINGS"

OFF_LOOPBACK_WARNING = (
    "warning: binding {host!r} exposes sluice off-loopback without bearer tokens.\n"
    "         Configure auth.tokens in sluice.yaml (each names a principal with its own\n"
    "         permissions), or put a reverse proxy with your own auth in front."
)


class RefusedToStart(SystemExit):
    """Raised when the server must not start (off-loopback without auth, bad config)."""


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(config: Config, host: str, insecure_no_auth: bool) -> None:
    """No tokens configured: loopback only, unless --insecure-no-auth (then warn loudly)."""
    if is_loopback(host) or config.auth.tokens:
        return
    if not insecure_no_auth:
        raise RefusedToStart(
            f"refusing to bind {host!r} without auth: no auth.tokens are configured.\n"
            "Add tokens under `auth:` in sluice.yaml, bind 127.0.0.1, or pass "
            "--insecure-no-auth to accept the risk."
        )
    print(OFF_LOOPBACK_WARNING.format(host=host), file=sys.stderr)  # noqa: T201


def with_server_settings(config: Config, settings: Mapping[str, Any]) -> Config:
    """The config with `server` settings replaced (flags of `sluice serve`), validated."""
    if not settings:
        return config
    merged = {**msgspec.structs.asdict(config.server), **settings}
    return msgspec.structs.replace(config, server=msgspec.convert(merged, ServerConfig))


def app_from_env() -> ASGIApp:
    """Worker entry point: the app for the config file in SLUICE_CONFIG and the server
    settings the parent process was given."""
    from api.app import create_app

    config = load_config(os.environ[CONFIG_ENV])
    bind = os.environ.get(BIND_ENV)
    if bind:  # `--host` overrides server.host: the Host allow-list follows the real bind
        server = msgspec.structs.replace(config.server, host=bind)
        config = msgspec.structs.replace(config, server=server)
    return create_app(config)
    settings = json.loads(os.environ.get(SERVER_SETTINGS_ENV) or "{}")
    return create_app(with_server_settings(load_config(os.environ[CONFIG_ENV]), settings))


SERVERS: tuple[str, ...] = ("hypercorn", "uvicorn", "granian")


def serve(
    config_path: str,
    host: str,
    port: int,
    *,
    workers: int = 1,
    insecure_no_auth: bool = False,
    access_log: bool = False,
    server: str = "hypercorn",
    server_settings: Mapping[str, Any] | None = None,
) -> int:
    """Serve with hypercorn (the default), or uvicorn/granian where measured faster
    (bench/ reports all three side by side). `server_settings` override the config's
    `server` section (e.g. {"max_concurrent_runs": 8})."""
    settings = dict(server_settings or {})
    config = with_server_settings(load_config(config_path), settings)
    check_bind(config, host, insecure_no_auth)
    # only for worker processes (app_from_env); this process passes `config` itself
    os.environ[CONFIG_ENV] = os.path.abspath(config_path)
    os.environ[SERVER_SETTINGS_ENV] = json.dumps(settings)
    if workers > 1:
        with shared_metrics():
            return _serve(config, host, port, workers, access_log, server)
    return _serve(config, host, port, workers, access_log, server)


@contextlib.contextmanager
def shared_metrics() -> Iterator[None]:
    """Workers count into one folder (prometheus-client multiprocess mode), so a scrape of
    any worker sees all of them; set before the workers start, removed after they stop."""
    if os.environ.get(MULTIPROC_ENV):  # the operator chose a folder: use it as it is
        yield
        return
    folder = tempfile.mkdtemp(prefix="sluice-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def _serve(
    config: Config, host: str, port: int, workers: int, access_log: bool, server: str
) -> int:
    if server == "uvicorn":
        return _serve_uvicorn(host, port, workers, access_log)
    if server == "granian":
        return _serve_granian(host, port, workers, access_log)
    hc = HypercornConfig()
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.accesslog = "-" if access_log else None
    hc.errorlog = "-"
    hc.graceful_timeout = 10
    hc.keep_alive_timeout = 30
    if workers == 1:
        return _serve_in_process(config, hc)
    hc.application_path = "api.server:app_from_env()"
    hc.workers = workers
    hc.worker_class = "uvloop"
    return run(hc)


def _serve_in_process(config: Config, hc: HypercornConfig) -> int:
    """One worker: hypercorn in this process, so SIGTERM first drains (stop admitting runs,
    /readyz 503, SSE streams end, running runs get their grace period) and only then does
    hypercorn close the listener. Several workers drain at lifespan shutdown instead."""
    import signal

    import anyio
    import uvloop
    from hypercorn.asyncio import serve as hypercorn_serve

    from api.app import build_app

    asgi, app = build_app(config)

    async def shutdown_trigger() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        runs = getattr(app.state, "runs", None)
        if runs is not None:
            await runs.drain()

    async def main() -> None:
        await hypercorn_serve(asgi, hc, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]

    anyio.run(main, backend_options={"loop_factory": uvloop.new_event_loop})
    return 0


def _serve_uvicorn(host: str, port: int, workers: int, access_log: bool) -> int:
    try:
        import uvicorn
    except ImportError as exc:
        raise RefusedToStart("--server uvicorn needs: pip install 'sluice[servers]'") from exc
    uvicorn.run(
        "api.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=access_log,
        lifespan="on",
        log_level="warning",
    )
    return 0


def _serve_granian(host: str, port: int, workers: int, access_log: bool) -> int:
    try:
        from granian import Granian
        from granian.constants import Interfaces, Loops
    except ImportError as exc:
        raise RefusedToStart("--server granian needs: pip install 'sluice[servers]'") from exc
    Granian(
        "api.server:app_from_env",
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        factory=True,
        log_access=access_log,
    ).serve()
    return 0
