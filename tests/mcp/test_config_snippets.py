"""`sluice mcp config --client NAME` prints a snippet each client can parse, pointing at the
right command or URL, and writes nothing (HOME and the working folder stay empty)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sluice.cli_mcp import CLIENTS

JSON_CLIENTS = {"claude-desktop", "cursor", "vscode", "windsurf", "gemini-cli"}


def snippet(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", "mcp", "config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "HOME": str(home), "APPDATA": str(home)},
    )


def stdio_entry(client: str, out: str) -> tuple[str, list[str]]:
    if client == "codex":
        entry = tomllib.loads(out)["mcp_servers"]["sluice"]
        return entry["command"], entry["args"]
    if client == "claude-code":
        words = out.split()
        assert words[:5] == ["claude", "mcp", "add", "sluice", "--"]
        return words[5], words[6:]
    servers = json.loads(out)
    entry = (servers["servers"] if client == "vscode" else servers["mcpServers"])["sluice"]
    return entry["command"], entry["args"]


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_stdio_snippet_starts_sluice_mcp_with_the_config(tmp_path: Path, client: str):
    config = tmp_path / "conf" / "sluice.yaml"
    got = snippet(tmp_path, "--client", client, "--config", "conf/sluice.yaml")
    command, args = stdio_entry(client, got.stdout)
    assert Path(command).name == "sluice" and Path(command).is_absolute()
    assert args == ["mcp", "--config", str(config.resolve())]
    assert got.stderr.startswith(f"# {client}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # nothing written
    assert list((tmp_path / "home").iterdir()) == []


@pytest.mark.parametrize("client", sorted(set(CLIENTS) - {"claude-desktop"}))
def test_http_snippet_reaches_mcp_with_the_token_from_the_environment(tmp_path: Path, client: str):
    got = snippet(tmp_path, "--client", client, "--url", "http://10.0.0.5:8787")
    out = got.stdout
    assert "http://10.0.0.5:8787/mcp" in out and "/mcp/mcp" not in out
    assert "SLUICE_TOKEN" in out or "${input:sluice-token}" in out  # never a literal token
    if client in JSON_CLIENTS:
        json.loads(out)
    if client == "codex":
        assert tomllib.loads(out)["mcp_servers"]["sluice"]["bearer_token_env_var"] == "SLUICE_TOKEN"


def test_an_unknown_client_is_refused_with_the_list(tmp_path: Path):
    got = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "mcp", "config", "--client", "notepad"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert got.returncode == 2 and "cursor" in got.stderr and "vscode" in got.stderr
