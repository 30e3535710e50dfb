"""`triplock codex-config`: the Codex CLI configuration that points Codex at Triplock.

Two snippets, for two files:

* the `[mcp_servers.<name>]` block for the user's `~/.codex/config.toml` (or `$CODEX_HOME/config.toml`):
  Triplock as a streamable-HTTP MCP server, the bearer token read from an environment variable;
* the `[mcp_servers.<name>.identity]` entry for the admin-enforced `requirements.toml`
  (`/etc/codex/requirements.toml` on Linux and macOS, or cloud-managed / MDM requirements), which
  makes Triplock the only MCP server Codex will enable.

**The hand-off.** Triplock, not Codex, decides whether a tool call needs a human. Codex asks its
user before any MCP tool that is not annotated `readOnlyHint=true` (and Triplock re-emits the
upstreams' hints faithfully, so every write qualifies); under `approval_policy = "never"`, as in
`codex exec`, it then refuses the call outright ("MCP tool call requires approval, but approval
policy is never") and the call never reaches Triplock, so nothing is held and nothing audited.
The block therefore sets `default_tools_approval_mode = "approve"`: Codex forwards every call,
Triplock's policy allows, denies or holds it, and a held call waits up to the gateway's
`approvals.hold_wait` for an approver in the console. If nobody decides by then, the model gets a
tool error that names the approval; once an approver has approved it, repeating exactly the same
call (same tool, same arguments, from any session of the same principal, so from a new `codex
exec` too) runs it once.

The block's other keys:

* `required = true`: without it Codex starts without Triplock's tools, silently and with exit 0,
  when Triplock cannot be reached or the token variable is unset; with it `codex exec` fails.
* `tool_timeout_sec`: above `approvals.hold_wait` plus the slowest upstream's `call_timeout`, so
  that Codex does not give up on a call while a human is approving it, or while the approved call
  runs; both are read from `--config` when given, else the gateway's defaults (40 s and 60 s).
* `startup_timeout_sec`: the first `tools/list` aggregates every upstream, which may have to be
  started (stdio) or dialled.

Sources for the formats (Codex CLI 0.169, openai/codex):

* config.toml keys (`url`, `bearer_token_env_var`, `required`, `startup_timeout_sec`,
  `tool_timeout_sec`, `default_tools_approval_mode` with the values `auto` / `prompt` /
  `approve`): `RawMcpServerConfig` and `AppToolApproval` in codex-rs/config/src/mcp_types.rs;
  when Codex asks (`requires_mcp_tool_approval`: not read-only, and destructive or open-world, a
  missing hint counting as true) and what `approve` skips: codex-rs/core/src/mcp_tool_call.rs.
  The generated block is accepted by `codex exec --strict-config` in tests/codex/test_codex.py,
  which also drives a hold, an approval and the repeat through the real CLI.
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
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config import ApprovalsConfig, ConfigError, Settings, UpstreamConfig, load_settings

DEFAULT_URL = "http://127.0.0.1:8080/mcp"
DEFAULT_SERVER_NAME = "triplock"
DEFAULT_TOKEN_ENV = "TRIPLOCK_TOKEN"

# Codex's default MCP startup timeout is short; the gateway answers `initialize` itself, but its
# first `tools/list` aggregates every upstream, which may have to be started (stdio) or dialled.
STARTUP_TIMEOUT_SEC = 30
# Room on top of hold_wait + call_timeout for the gateway's own work and the network.
TOOL_TIMEOUT_MARGIN_SEC = 20

_DEFAULT_HOLD_WAIT = float(ApprovalsConfig.model_fields["hold_wait"].default)
_DEFAULT_CALL_TIMEOUT = float(UpstreamConfig.model_fields["call_timeout"].default)

# A TOML bare key. Codex itself accepts any quoted name, but it puts the name into the model-visible
# tool namespace `mcp__<name>` and sanitises anything outside these characters there, so the names
# the model sees would no longer match the config.
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class GatewayTimes:
    """The gateway settings Codex's tool timeout has to outlast, and where they came from."""

    hold_wait: float = _DEFAULT_HOLD_WAIT
    call_timeout: float = _DEFAULT_CALL_TIMEOUT
    source: str = "the gateway's defaults"

    @classmethod
    def from_settings(cls, settings: Settings, source: str) -> GatewayTimes:
        """The configured hold wait and the slowest upstream's call timeout."""
        slowest = max((u.call_timeout for u in settings.upstreams), default=_DEFAULT_CALL_TIMEOUT)
        return cls(hold_wait=settings.approvals.hold_wait, call_timeout=slowest, source=source)

    @property
    def tool_timeout_sec(self) -> int:
        """Seconds Codex waits for one tool call: the hold, then the approved call, then a margin."""
        return math.ceil(self.hold_wait + self.call_timeout) + TOOL_TIMEOUT_MARGIN_SEC


def _toml_string(value: str) -> str:
    """A TOML basic string. JSON's escapes (\\", \\\\, \\n, \\uXXXX ...) are all valid TOML escapes."""
    return json.dumps(value, ensure_ascii=False)


def _seconds(value: float) -> str:
    return f"{value:g}"


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
    times: GatewayTimes | None = None,
) -> str:
    """The `[mcp_servers.<server_name>]` block for Codex's `config.toml`.

    Codex sends `Authorization: Bearer $<token_env>` on every request to ``url``; the token itself
    never appears in the file. ``times`` are the gateway's hold wait and call timeout the block's
    `tool_timeout_sec` must outlast (default: the gateway's defaults).
    """
    _check(url, server_name)
    if not _ENV_VAR.match(token_env):
        raise ValueError(f"token env var must be a shell variable name, got {token_env!r}")
    times = times or GatewayTimes()
    return (
        "# Triplock, the organisation's MCP gateway, for ~/.codex/config.toml.\n"
        f"# Codex sends `Authorization: Bearer ${token_env}` with each request.\n"
        f"[mcp_servers.{server_name}]\n"
        f"url = {_toml_string(url)}\n"
        f"bearer_token_env_var = {_toml_string(token_env)}\n"
        "# Fail (codex exec exits non-zero) instead of running silently without Triplock's tools\n"
        f"# when the gateway is unreachable or ${token_env} is unset.\n"
        "required = true\n"
        "# Codex does not ask: it forwards every call and Triplock's policy decides. A held call\n"
        "# waits for an approver in Triplock's console; if the answer says it is held, approve it\n"
        "# there and repeat exactly the same call (same arguments, a new `codex exec` is fine):\n"
        "# it runs once. Without this, Codex refuses every write itself under approval_policy\n"
        '# "never" and asks you for each one otherwise.\n'
        'default_tools_approval_mode = "approve"\n'
        f"startup_timeout_sec = {STARTUP_TIMEOUT_SEC}\n"
        f"# Above approvals.hold_wait ({_seconds(times.hold_wait)} s) plus the slowest upstream's call_timeout\n"
        f"# ({_seconds(times.call_timeout)} s), from {times.source}: Codex keeps waiting while a human decides.\n"
        f"tool_timeout_sec = {times.tool_timeout_sec}\n"
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


def _times(config: Path | None) -> GatewayTimes:
    if config is None:
        return GatewayTimes()
    # Validated as `serve` validates it (environment overrides included), so a bad file is refused.
    return GatewayTimes.from_settings(load_settings(config), f"--config {config.name}")


def cmd_codex_config(args: argparse.Namespace) -> int:
    """Print the config.toml block, and with --requirements the requirements.toml entry too."""
    try:
        times = _times(args.config)
        out = codex_config_toml(args.url, server_name=args.server_name, token_env=args.token_env, times=times)
        if args.requirements:
            out += "\n" + codex_requirements_toml(args.url, server_name=args.server_name)
    except (ValueError, ConfigError) as exc:
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
        "--config",
        type=Path,
        default=None,
        help="the gateway's TOML config: tool_timeout_sec is set above its approvals.hold_wait and"
        " upstream call_timeout (default: the gateway's defaults)",
    )
    p.add_argument(
        "--requirements",
        action="store_true",
        help="also print the requirements.toml entry that pins Codex to Triplock as its only MCP server",
    )
    p.set_defaults(func=cmd_codex_config)
