"""`sluice mcp`: the MCP server on stdin/stdout (for desktop agents), and `sluice mcp config
--client NAME`, which prints the snippet an agent client needs to start or reach it (it
never edits the client's files: where the snippet goes is printed on stderr)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR = 0, 1


def cmd_mcp(args: argparse.Namespace) -> int:
    import anyio

    from api.auth import BearerAuth
    from api.mcp_server import serve_stdio
    from engine.config import load_config
    from sluice.cli import resolve_config_path

    path, _ = resolve_config_path(args.config)
    config = load_config(path)
    principal = None
    if args.token:
        # the same token -> principal mapping as the HTTP API's bearer auth
        principal = BearerAuth(None, config).principal_of(args.token)  # type: ignore[arg-type]
        if principal is None:
            sys.stderr.write("sluice mcp: the token is not listed under auth.tokens\n")
            return EXIT_ERROR
    anyio.run(lambda: serve_stdio(config, principal=principal))
    return EXIT_OK


# -- client configuration snippets ------------------------------------------------------------
def _command() -> tuple[str, list[str]]:
    """The `sluice` script beside this interpreter (its venv's), else the one on PATH, else
    this interpreter running the module: an absolute command, as clients need."""
    beside = Path(sys.executable).parent / "sluice"
    found = str(beside) if beside.exists() else shutil.which("sluice")
    if found:
        return str(Path(found).absolute()), []
    return sys.executable, ["-m", "sluice.cli"]


def _stdio(config: str | None) -> tuple[str, list[str]]:
    command, prefix = _command()
    return command, [*prefix, "mcp"] + (["--config", str(Path(config).resolve())] if config else [])


AUTH = "Bearer ${SLUICE_TOKEN}"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2)


def _mcp_servers(config: str | None, url: str | None, url_key: str = "url") -> str:
    """The `mcpServers` object Claude Desktop, Cursor, Windsurf and Gemini CLI read."""
    if url:
        entry: dict[str, Any] = {url_key: url, "headers": {"Authorization": AUTH}}
    else:
        command, args = _stdio(config)
        entry = {"command": command, "args": args}
    return _json({"mcpServers": {"sluice": entry}})


def _vscode(config: str | None, url: str | None) -> str:
    if url:
        return _json(
            {
                "inputs": [
                    {
                        "type": "promptString",
                        "id": "sluice-token",
                        "description": "sluice bearer token",
                        "password": True,
                    }
                ],
                "servers": {
                    "sluice": {
                        "type": "http",
                        "url": url,
                        "headers": {"Authorization": "Bearer ${input:sluice-token}"},
                    }
                },
            }
        )
    command, args = _stdio(config)
    return _json({"servers": {"sluice": {"type": "stdio", "command": command, "args": args}}})


def _claude_code(config: str | None, url: str | None) -> str:
    if url:
        return (
            f"claude mcp add --transport http sluice {url} "
            '--header "Authorization: Bearer $SLUICE_TOKEN"'
        )
    command, args = _stdio(config)
    return f"claude mcp add sluice -- {command} {' '.join(args)}"


def _codex(config: str | None, url: str | None) -> str:
    if url:
        return f'[mcp_servers.sluice]\nurl = "{url}"\nbearer_token_env_var = "SLUICE_TOKEN"'
    command, args = _stdio(config)
    return f"[mcp_servers.sluice]\ncommand = {json.dumps(command)}\nargs = {json.dumps(args)}"


# name -> (where the snippet goes, renderer)
CLIENTS: dict[str, tuple[str, Any]] = {
    "claude-desktop": (
        "claude_desktop_config.json (macOS: ~/Library/Application Support/Claude/, Windows: "
        "%APPDATA%\\Claude\\); HTTP needs a local bridge, use stdio",
        lambda c, u: _mcp_servers(c, None),
    ),
    "claude-code": ("run it in a shell", _claude_code),
    "cursor": ("~/.cursor/mcp.json, or .cursor/mcp.json in a project", _mcp_servers),
    "vscode": (".vscode/mcp.json in the workspace", _vscode),
    "windsurf": (
        "~/.codeium/windsurf/mcp_config.json",
        lambda c, u: _mcp_servers(c, u, "serverUrl"),
    ),
    "gemini-cli": (
        "~/.gemini/settings.json (merge into it)",
        lambda c, u: _mcp_servers(c, u, "httpUrl"),
    ),
    "codex": ("~/.codex/config.toml", _codex),
}


def cmd_mcp_config(args: argparse.Namespace) -> int:
    where, render = CLIENTS[args.client]
    url = args.url.rstrip("/") + "/mcp" if args.url and not args.url.endswith("/mcp") else args.url
    config = args.config
    if config is None and not url and Path("sluice.yaml").exists():
        config = "sluice.yaml"
    sys.stdout.write(render(config, url) + "\n")
    sys.stderr.write(f"# {args.client}: {where}\n")
    if url:
        sys.stderr.write("# set SLUICE_TOKEN to a token listed under auth.tokens\n")
    return EXIT_OK


def add_mcp_commands(subparsers: Any) -> None:
    """Register `sluice mcp` and `sluice mcp config` on the main parser's subparsers."""
    m = subparsers.add_parser("mcp", help="serve MCP on stdin/stdout (for agent clients)")
    m.add_argument("--config", help="sluice.yaml (default: ./sluice.yaml, else the demo)")
    m.add_argument(
        "--token",
        default=os.environ.get("SLUICE_TOKEN"),
        help="act as this token's principal (default $SLUICE_TOKEN; none: the default permissions)",
    )
    m.set_defaults(func=cmd_mcp)
    sub = m.add_subparsers(dest="mcp_command")
    c = sub.add_parser("config", help="print an agent client's configuration snippet")
    c.add_argument(
        "--client", required=True, choices=sorted(CLIENTS), help="the agent client to configure"
    )
    c.add_argument("--config", help="the sluice.yaml `sluice mcp` should serve")
    c.add_argument("--url", help="a running server's URL: the snippet reaches /mcp over HTTP")
    c.set_defaults(func=cmd_mcp_config)
