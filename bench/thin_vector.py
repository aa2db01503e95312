"""The thinnest HTTP service over a vector backend's own client: the share of HTTP in the
vector bench (the counterpart of bench/thin_service.py for SQL).

    python -m bench.thin_vector --backend lancedb --target PATH --port P

Starlette served by hypercorn (1 worker, uvloop: as `sluice serve`), msgspec JSON, the
search of bench/vector_clients.py, no safety. POST {"vector": [...], "limit": k,
"probes": p} to /search; the answer carries the columns and rows a sluice search returns.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator

import msgspec
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.vector_clients import OPENERS

ENCODER = msgspec.json.Encoder()


class Body(msgspec.Struct):
    vector: list[float]
    limit: int = 10
    probes: int = 10


def create_app() -> Starlette:
    decode = msgspec.json.Decoder(Body).decode

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opener = OPENERS[os.environ["THIN_VECTOR_BACKEND"]]
        app.state.search, close = await opener(os.environ["THIN_VECTOR_TARGET"])
        yield
        await close()

    async def search(request: Request) -> Response:
        body = decode(await request.body())
        q = np.asarray(body.vector, dtype=np.float32)
        rows = await request.app.state.search(q, body.limit, body.probes)
        answer = {"columns": ["id", "score", "bucket"], "rows": rows}
        return Response(ENCODER.encode(answer), media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    routes = [Route("/search", search, methods=["POST"]), Route("/health", health)]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.thin_vector")
    p.add_argument("--backend", required=True, choices=sorted(OPENERS))
    p.add_argument("--target", required=True, help="LanceDB/Qdrant folder or pgserver socket dir")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    os.environ["THIN_VECTOR_BACKEND"] = a.backend
    os.environ["THIN_VECTOR_TARGET"] = a.target
    from hypercorn.config import Config
    from hypercorn.run import run

    hc = Config()
    hc.bind = [f"127.0.0.1:{a.port}"]
    hc.application_path = "bench.thin_vector:create_app()"
    hc.worker_class = "uvloop"
    hc.workers = 1
    hc.accesslog = None
    run(hc)


if __name__ == "__main__":
    main()
