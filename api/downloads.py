"""Whole stored results as files: one response for GET /v1/results/{id}?format= and
GET /v1/runs/{id}/result, streamed one row group at a time (engine/export.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pyarrow as pa
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.errors import ApiError
from engine.export import FORMATS, iter_chunks
from engine.results import Reader, ResultStore

FORMAT_HELP = "parquet, csv, ndjson or arrow (an Arrow IPC stream)"


def format_param(request: Request, default: str | None) -> str | None:
    """The `format` query parameter: one of FORMATS, else a 400 naming them."""
    fmt = request.query_params.get("format", default)
    if fmt is not None and fmt not in FORMATS:
        raise ApiError(
            400,
            "invalid_parameter",
            f"unknown format {fmt!r}",
            suggestion=f"use one of {', '.join(FORMATS)}",
        )
    return fmt


async def download(
    store: ResultStore, result_id: str, fmt: str, reader: Reader, name: str | None = None
) -> Response:
    """The stored result in `fmt`, as an attachment, if `reader` may read it. Raises
    ResultNotFound (another principal's result included)."""
    source = await store.open_file(result_id, reader)
    filename = f"{name or result_id}.{fmt}".replace('"', "")
    return StreamingResponse(
        stream_result(source, fmt),
        media_type=FORMATS[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def stream_result(source: pa.NativeFile, fmt: str) -> AsyncIterator[bytes]:
    """The stored result converted in a worker thread: memory stays at one batch whatever
    the result's size. The file is closed at the end (or when the client goes)."""
    try:
        chunks = iter_chunks(source, fmt)
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk
    finally:
        source.close()
