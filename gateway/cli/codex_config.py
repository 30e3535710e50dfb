"""`triplock codex-config`: the Codex CLI configuration that points Codex at Triplock.

Two snippets, for two files:

* the `[mcp_servers.<name>]` block for the user's `~/.codex/config.toml` (or `$CODEX_HOME/config.toml`):
  Triplock as a streamable-HTTP MCP server, the bearer token read from an environment variable;
* the `[mcp_servers.<name>.identity]` entry for the admin-enforced `requirements.toml`
  (`/etc/codex/requirements.toml` on Linux and macOS, or cloud-managed / MDM requirements), which
  makes Triplock the only MCP server Codex will enable.

Sources for the formats (Codex CLI 0.169, openai/codex):

* config.toml streamable-HTTP keys (`url`, `bearer_token_env_var`, `startup_timeout_sec`,
  `tool_timeout_sec`): `McpServerTransportConfig::StreamableHttp` and `McpServerConfig` in
  codex-rs/config/src/mcp_types.rs; the generated block is also accepted by
  `codex exec --strict-config` in tests/codex/test_codex.py.
* requirements.toml: `ConfigRequirementsToml.mcp_servers: BTreeMap<String, McpServerRequirement>`
  where `McpServerRequirement { identity }` and `McpServerIdentity` is untagged
  `{ command = "..." }` (stdio) or `{ url = "..." }` (streamable HTTP), in
  codex-rs/config/src/config_requirements.rs. codex-rs/config/src/mcp_requirements.rs enables a
  configured server only when an entry with the *same name* exists and its identity matches,
  the URL compared as an exact string (`got_url == want_url`); every other server is disabled
  (`McpServerDisabledReason::Requirements`). The managed-configuration page of the Codex docs
  says the same ("Codex enables an MCP server only when both its name and identity match an
  approved entry; otherwise, Codex disables it") and lists the file locations.

So the URL printed into both snippets must be byte-identical, and the server name too. Checked by
hand with Codex 0.169 (`codex mcp list` with the entry in /etc/codex/requirements.toml): Triplock
stays enabled, a second configured server is "disabled: requirements", and the same entry with a
trailing slash added to the URL disables Triplock as well.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8080/mcp"
DEFAULT_SERVER_NAME = "triplock"
DEFAULT_TOKEN_ENV = "TRIPLOCK_TOKEN"

# Codex's default MCP startup timeout is short; the gateway answers `initialize` itself, but its
# first `tools/list` aggregates every upstream, which may have to be started (stdio) or dialled.
STARTUP_TIMEOUT_SEC = 30
# Above the gateway's 40 s wait for a held call's approval, so that Codex does not give up on a
# call a human is approving, plus room for the upstream's own call time after the approval.
TOOL_TIMEOUT_SEC = 120

# A TOML bare key. Codex itself accepts any quoted name, but it puts the name into the model-visible
# tool namespace `mcp__<name>` and sanitises anything outside these characters there, so the names
# the model sees would no longer match the config.
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _toml_string(value: str) -> str:
    """A TOML basic string. JSON's escapes (\\", \\\\, \\n, \\uXXXX ...) are all valid TOML escapes."""
    return json.dumps(value, ensure_ascii=False)


def _check(url: str, server_name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"url must be an absolute http(s) URL, got {url!r}")
    if not _NAME.match(server_name):
        raise ValueError(f"server name must match [A-Za-z0-9_-]+, got {server_name!r}")


def codex_config_toml(
    url: str,
    *,
    server_name: str = DEFAULT_SERVER_NAME,
    token_env: str = DEFAULT_TOKEN_ENV,
) -> str:
    """The `[mcp_servers.<server_name>]` block for Codex's `config.toml`.

    Codex sends `Authorization: Bearer $<token_env>` on every request to ``url``; the token itself
    never appears in the file.
    """
    _check(url, server_name)
    if not _ENV_VAR.match(token_env):
        raise ValueError(f"token env var must be a shell variable name, got {token_env!r}")
    return (
        "# Triplock, the organisation's MCP gateway, for ~/.codex/config.toml.\n"
        f"# Codex sends `Authorization: Bearer ${token_env}` with each request.\n"
        f"[mcp_servers.{server_name}]\n"
        f"url = {_toml_string(url)}\n"
        f"bearer_token_env_var = {_toml_string(token_env)}\n"
        f"startup_timeout_sec = {STARTUP_TIMEOUT_SEC}\n"
        "# Longer than Triplock's wait for a human to approve a held call.\n"
        f"tool_timeout_sec = {TOOL_TIMEOUT_SEC}\n"
    )


def codex_requirements_toml(url: str, *, server_name: str = DEFAULT_SERVER_NAME) -> str:
    """The `requirements.toml` entry that allows Triplock and, by being the only entry, nothing else.

    Codex matches both the name and the URL exactly, so pass the same values as to
    :func:`codex_config_toml`.
    """
    _check(url, server_name)
    return (
        "# For /etc/codex/requirements.toml (or cloud-managed / MDM requirements): with an\n"
        "# mcp_servers allowlist, Codex enables only servers whose name and identity match an\n"
        "# entry, so Triplock becomes the only MCP server Codex will use. The url must equal the\n"
        "# one in config.toml character for character.\n"
        f"[mcp_servers.{server_name}.identity]\n"
        f"url = {_toml_string(url)}\n"
    )


def cmd_codex_config(args: argparse.Namespace) -> int:
    """Print the config.toml block, and with --requirements the requirements.toml entry too."""
    try:
        out = codex_config_toml(args.url, server_name=args.server_name, token_env=args.token_env)
        if args.requirements:
            out += "\n" + codex_requirements_toml(args.url, server_name=args.server_name)
    except ValueError as exc:
        print(f"triplock codex-config: {exc}", file=sys.stderr)
        return 2
    print(out, end="")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `codex-config` subcommand to the `triplock` parser."""
    p = subparsers.add_parser(
        "codex-config",
        help="print the Codex config.toml block (and requirements.toml entry) for this gateway",
        description="Print the [mcp_servers] block that points the Codex CLI at Triplock.",
    )
    p.add_argument("--url", default=DEFAULT_URL, help="Triplock's MCP endpoint (default: %(default)s)")
    p.add_argument("--server-name", default=DEFAULT_SERVER_NAME, help="name of the entry (default: %(default)s)")
    p.add_argument(
        "--token-env",
        default=DEFAULT_TOKEN_ENV,
        help="env var Codex reads the bearer token from (default: %(default)s)",
    )
    p.add_argument(
        "--requirements",
        action="store_true",
        help="also print the requirements.toml entry that pins Codex to Triplock as its only MCP server",
    )
    p.set_defaults(func=cmd_codex_config)
