"""The thinnest service on sluice's stack: the ceiling for any HTTP lookup service here.

    python -m bench.thin_service --dsn postgresql://... --port 8790 [--server granian] [--workers 2]

Starlette, one asyncpg pool, one prepared statement, msgspec encoding, no safety. POST
{"id": n} to /lookup; the answer carries the same columns and rows a sluice lookup returns.
Served by the same server kinds, loop and worker counts as `sluice serve` (api/server.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os

import asyncpg
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SQL = "SELECT id, name, email, country FROM users WHERE id = $1"
ENCODER = msgspec.json.Encoder()


class Body(msgspec.Struct):
    id: int


def create_app() -> Starlette:
    decode = msgspec.json.Decoder(Body).decode

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        size = int(os.environ.get("THIN_POOL", "16"))
        dsn = os.environ["THIN_DSN"]
        app.state.pool = await asyncpg.create_pool(dsn, min_size=4, max_size=size)
        yield
        await app.state.pool.close()

    async def lookup(request: Request) -> Response:
        key = decode(await request.body()).id
        async with request.app.state.pool.acquire() as conn:
            rows = await conn.fetch(SQL, key)  # asyncpg prepares once per connection
        body = {"columns": ["id", "name", "email", "country"], "rows": [dict(r) for r in rows]}
        return Response(ENCODER.encode(body), media_type="application/json")

    return Starlette(routes=[Route("/lookup", lookup, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.thin_service")
    p.add_argument("--dsn", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--server", default="hypercorn", choices=("hypercorn", "uvicorn", "granian"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--pool", type=int, default=16, help="connections per worker")
    a = p.parse_args()
    os.environ["THIN_DSN"] = a.dsn
    os.environ["THIN_POOL"] = str(a.pool)
    app = "bench.thin_service:create_app"
    if a.server == "uvicorn":
        import uvicorn

        uvicorn.run(app, factory=True, port=a.port, workers=a.workers, loop="uvloop",
                    http="httptools", access_log=False, log_level="warning")  # fmt: skip
    elif a.server == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops

        Granian(app, address="127.0.0.1", port=a.port, workers=a.workers, factory=True,
                interface=Interfaces.ASGI, loop=Loops.uvloop, log_access=False).serve()  # fmt: skip
    else:
        from hypercorn.config import Config
        from hypercorn.run import run

        hc = Config()
        hc.bind = [f"127.0.0.1:{a.port}"]
        hc.application_path = f"{app}()"
        hc.workers = a.workers
        hc.worker_class = "uvloop"
        run(hc)


if __name__ == "__main__":
    main()
