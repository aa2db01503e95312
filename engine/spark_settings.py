"""`engine.spark` in sluice.yaml: where big merges go (a Spark Connect server) and where their
step tables are staged as Parquet for it to read. No Spark import here: the config loads
without the `spark` extra installed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from connectors.config import Base, PositiveFloat, PositiveInt


class SparkSettings(Base, frozen=True):
    # sc://host:port of a Spark Connect server (Spark 4.x)
    remote: Annotated[str, msgspec.Meta(pattern=r"^sc://")]
    # file:///shared/path (Spark and sluice on one host, or a path both mount)
    staging: str
    # rows in all the step tables of a request or run from which its merge goes to Spark
    # (unset: only when the request asks with "engine": "spark")
    min_rows: PositiveInt | None = None
    max_concurrent_merges: PositiveInt = 2  # merges handed to Spark at once, per process
    connect_timeout_seconds: PositiveFloat = 30.0  # the first connection to the server

    def problem(self) -> str | None:
        scheme = urlsplit(self.staging).scheme
        if scheme == "s3" or scheme == "s3a":
            return (
                "engine.spark.staging: s3:// staging is not supported yet: Spark reads s3a:// "
                "only with the hadoop-aws and AWS SDK jars, which the pyspark wheel does not "
                "ship; use file:///path on a folder Spark and sluice both see"
            )
        if scheme != "file" or not urlsplit(self.staging).path.startswith("/"):
            return (
                f"engine.spark.staging: {self.staging!r} is not a file:///absolute/path URL "
                "(write file:///var/lib/sluice/staging)"
            )
        return None

    @property
    def staging_dir(self) -> Path:
        return Path(urlsplit(self.staging).path)


class EngineConfig(Base, frozen=True):
    """`engine:` in sluice.yaml: engines a merge may be handed to besides the local DuckDB."""

    spark: SparkSettings | None = None
