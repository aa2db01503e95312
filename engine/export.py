"""A stored result (one Parquet file) as Parquet, CSV, NDJSON or Arrow IPC stream bytes, one
row group at a time, so memory stays at one batch whatever the result's size. Blocking: call
the iterator from a worker thread in async code."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pyarrow as pa

FORMATS: dict[str, str] = {
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
    "arrow": "application/vnd.apache.arrow.stream",
}
_ENCODER = msgspec.json.Encoder(decimal_format="number")


def format_for(path: str | Path) -> str:
    """The export format named by a file's extension (.parquet, .csv, .ndjson/.jsonl,
    .arrow/.arrows for an Arrow IPC stream)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    fmt = {"jsonl": "ndjson", "pq": "parquet", "arrows": "arrow"}.get(suffix, suffix)
    if fmt not in FORMATS:
        raise ValueError(
            f"cannot tell the format of {path!s}: use .parquet, .csv, .ndjson or .arrow"
        )
    return fmt


def iter_chunks(
    source: str | Path | pa.NativeFile,
    fmt: str,
    *,
    chunk: int = 1 << 20,
    batch_rows: int = 10_000,
) -> Iterator[bytes]:
    """`source` (a Parquet file's path, or the file opened: the caller closes it) in `fmt`."""
    if fmt == "parquet":
        if isinstance(source, pa.NativeFile):
            source.seek(0)
            while data := source.read(chunk):
                yield data
            return
        with open(source, "rb") as f:
            while data := f.read(chunk):
                yield data
        return
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "arrow":
        yield from _arrow_stream(source, batch_rows)
        return
    with pq.ParquetFile(source) as file:
        first = True
        for batch in file.iter_batches(batch_size=batch_rows):
            if fmt == "csv":
                buf = io.BytesIO()
                pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=first))
                first = False
                yield buf.getvalue()
            elif fmt == "ndjson":
                yield b"".join(_ENCODER.encode(r) + b"\n" for r in batch.to_pylist())
            else:
                raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def _arrow_stream(source: str | Path | pa.NativeFile, batch_rows: int) -> Iterator[bytes]:
    """The Arrow IPC stream format: the schema, then one message per batch, then the end
    marker; each yielded as soon as it is written."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(source) as file:
        buf = io.BytesIO()
        with pa.ipc.new_stream(buf, file.schema_arrow) as writer:
            for batch in file.iter_batches(batch_size=batch_rows):
                writer.write_batch(batch)
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()
