"""The `results` section of sluice.yaml: the local store by default, and an `s3` store that
fails at start, naming the setting, without a bucket, an index in PostgreSQL or its
credentials in the environment; unknown keys (a secret written in the file) fail too."""

from __future__ import annotations

import pytest

from engine.config import load_config_text
from engine.errors import ConfigError

PG = "postgresql://sluice@127.0.0.1/sluice?schema=shared"
ENV = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env=ENV if env is None else env)
    return caught.value.problems


def test_local_by_default_and_s3_with_everything_it_needs() -> None:
    assert load_config_text("", env={}).results.store == "local"
    config = load_config_text(
        f"server:\n  run_store: {PG}\nresults:\n  store: s3\n  bucket: b\n"
        "  endpoint: http://127.0.0.1:8333\n",
        env=ENV,
    )
    assert config.results.bucket == "b" and config.results.index is None
    named = load_config_text(
        f"results:\n  store: s3\n  bucket: b\n  index: {PG}\n"
        "  access_key_env: MY_KEY\n  secret_key_env: MY_SECRET\n",
        env={"MY_KEY": "k", "MY_SECRET": "s"},
    )
    assert named.results.index == PG


def test_what_s3_lacks_is_named() -> None:
    found = problems("results:\n  store: s3\n", env={})
    assert any("results.bucket" in p and "needs a bucket" in p for p in found), found
    assert any("results.index" in p and "postgresql://" in p for p in found), found
    assert any("AWS_ACCESS_KEY_ID" in p for p in found), found
    assert any("AWS_SECRET_ACCESS_KEY" in p for p in found), found
    # an embedded SQLite run store cannot hold the shared index
    found = problems("server:\n  run_store: runs.sqlite\nresults:\n  store: s3\n  bucket: b\n")
    assert any("results.index" in p for p in found), found


def test_unknown_keys_and_values_fail() -> None:
    found = problems(f"results:\n  store: s3\n  bucket: b\n  index: {PG}\n  secret_key: x\n")
    assert any("unknown key 'secret_key'" in p for p in found), found
    found = problems("results:\n  store: gcs\n")
    assert any("results.store" in p and "local, s3" in p for p in found), found
    found = problems(f"results:\n  store: s3\n  bucket: b\n  index: {PG}\n  prefix: ../x\n")
    assert any("results.prefix" in p for p in found), found
