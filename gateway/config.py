"""Typed configuration: one TOML file, validated at start, overridable by ``TRIPLOCK_*`` env vars.

Env overrides use ``__`` between levels: ``TRIPLOCK_SERVER__PORT=9000``.
Errors name the key and the reason (see :func:`format_validation_error`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{0,32}$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_UNSAFE_HEADER_VALUE_RE = re.compile(r"[\r\n\x00]")


class _Strict(BaseModel):
    # Unknown keys are typos far more often than intent: refuse them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    """The HTTP listener: address, MCP path, request limits, processes."""

    host: str = Field(default="127.0.0.1", description="Bind address. Anything but loopback needs authentication.")
    port: int = Field(default=8080, ge=0, le=65535, description="Bind port.")
    path: str = Field(default="/mcp", description="The MCP endpoint path.")
    public_url: str | None = Field(default=None, description="Canonical URL agents use; names the gateway.")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Request bodies over this get HTTP 413.")
    max_json_depth: int = Field(default=64, ge=2, le=10_000, description="JSON nested deeper gets a parse error.")
    session_idle_seconds: float = Field(
        default=1800.0, gt=0, description="Idle MCP sessions are closed after this (clients rarely send DELETE)."
    )
    allowed_origins: tuple[str, ...] = Field(
        default=(),
        description="Browser origins allowed besides the gateway's own (loopback names on its port, public_url,"
        " the console URL).",
    )
    allowed_hosts: tuple[str, ...] = Field(
        default=(),
        description="Extra Host header values accepted on every route besides the bind address and public_url's"
        " host (DNS-rebinding protection); '*' accepts any.",
    )
    workers: int = Field(
        default=1, ge=1, le=64,
        description="Worker processes, each with its own SO_REUSEPORT socket on the port, under a small supervisor;"
        " above 1, audit.path must contain {pid}"
        " and state should be in Redis (store.kind).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    runtime: Literal["triplock", "uvicorn"] = Field(
        default="triplock",
        description="HTTP server: Triplock's own (uvloop + httptools; cheapest, every limit below) or uvicorn"
        " (uvloop + httptools; widely used; only keepalive_timeout_seconds and max_connections apply).",
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300,
        description="From a request's first byte to the end of its head; then 408 and close (slowloris).",
    )
    body_idle_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="Silence allowed in the middle of a request body; then 408 and close."
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600,
        description="A whole request body (time spent waiting on the gateway not counted); then 408 and close.",
    )
    keepalive_timeout_seconds: float = Field(
        default=75.0, gt=0, le=3600,
        description="Idle kept-alive connections are closed after this; keep it above a load balancer's idle timeout.",
    )
    max_connections: int = Field(
        default=4096, ge=1, le=1_000_000,
        description="Open client connections per process; beyond it a new one gets 503 with Retry-After.",
    )
    max_header_bytes: int = Field(
        default=65536, ge=1024, le=1024 * 1024, description="Request line and header fields; beyond it 431."
    )

    @field_validator("path")
    @classmethod
    def _path_starts_with_slash(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v

    @model_validator(mode="after")
    def _body_timeouts(self) -> ServerConfig:
        if self.body_idle_timeout_seconds > self.body_timeout_seconds:
            raise ValueError("body_idle_timeout_seconds must not exceed body_timeout_seconds")
        return self

    @property
    def is_loopback(self) -> bool:
        """True when the bind address only accepts local connections."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class UpstreamConfig(_Strict):
    """One MCP server behind the gateway (``[[upstreams]]``); its tools are exposed as ``PREFIX__NAME``."""

    name: str = Field(description="Unique name, [A-Za-z0-9_-]{1,32}; the policy file classifies it by this name.")
    prefix: str | None = Field(
        default=None, description="Namespace for its tools; defaults to the name; '' exposes the upstream's own names."
    )
    transport: Literal["http", "stdio"] = Field(description="'http' (streamable HTTP) or 'stdio' (a child process).")
    # http
    url: str | None = Field(default=None, description="http: the upstream's MCP endpoint (http:// or https://).")
    headers: dict[str, str] = Field(default_factory=dict, description="http: extra headers sent on every request.")
    bearer_token_env: str | None = Field(
        default=None,
        description="http: env var holding the upstream's own bearer token (the client's token is never"
        " forwarded); it must be set when the gateway starts.",
    )
    bearer_token_file: Path | None = Field(
        default=None, description="http: file holding the upstream's own bearer token (instead of bearer_token_env)."
    )
    # stdio
    command: str | None = Field(default=None, description="stdio: the program to run.")
    args: tuple[str, ...] = Field(default=(), description="stdio: its arguments.")
    env: dict[str, str] = Field(default_factory=dict, description="stdio: extra environment variables for it.")
    cwd: Path | None = Field(default=None, description="stdio: its working directory.")
    # http: OAuth client credentials toward the upstream (its own identity, never the client's token)
    oauth_token_url: str | None = Field(
        default=None,
        description="http: OAuth token endpoint for client credentials (the gateway's own identity). Unset with"
        " oauth_client_id set: discovered from the upstream's 401 (RFC 9728 protected resource metadata, then"
        " RFC 8414 / OpenID authorization server metadata).",
    )
    oauth_client_id: str | None = Field(default=None, description="http: OAuth client id.")
    oauth_client_secret_env: str | None = Field(
        default=None, description="http: env var holding the OAuth client secret; it must be set at start."
    )
    oauth_scope: str | None = Field(default=None, description="http: OAuth scope to request.")
    oauth_audience: str | None = Field(
        default=None,
        description="http: the RFC 8707 resource (audience) to request a token for; with discovery it defaults to"
        " the resource the upstream's protected resource metadata names.",
    )
    oauth_private_key_file: Path | None = Field(
        default=None,
        description="http: PEM private key for private_key_jwt client authentication (RFC 7523), instead of a"
        " client secret.",
    )
    oauth_token_auth_method: Literal["auto", "client_secret_basic", "client_secret_post", "private_key_jwt"] = Field(
        default="auto",
        description="http: how the gateway authenticates at the token endpoint; 'auto' picks the first the"
        " authorization server supports of what is configured (a secret: basic, then post; a key: private_key_jwt).",
    )
    oauth_grant: Literal["client_credentials", "authorization_code", "jwt_bearer", "token_exchange"] | None = Field(
        default=None,
        description="http: how the gateway gets the upstream's tokens. 'client_credentials' (the default when"
        " oauth_client_id is set): its own identity, no person. 'authorization_code': an admin signs in once in a"
        " browser (`triplock upstreams authorize NAME`); the grant is kept in the store and refreshed by the"
        " gateway. oauth_client_id/oauth_client_secret_env are then optional (a pre-registered client); without"
        " them the client is a client ID metadata document (oauth_client_metadata_url) or registered dynamically."
        " 'jwt_bearer': the workload's own JWT (oauth_assertion_file) is the grant (RFC 7523, workload identity"
        " federation). 'token_exchange': the gateway's ID token at the enterprise IdP (oauth_id_token_file) is"
        " exchanged there for an ID-JAG, which is the grant (RFC 8693 + RFC 7523, enterprise-managed authorization).",
    )
    oauth_client_metadata_url: str | None = Field(
        default=None,
        description="http, authorization_code: the https URL of this gateway's OAuth client ID metadata document"
        " (SEP-991), used as client_id where the authorization server supports such documents. Unset: the"
        " document Triplock serves at {server.public_url}/oauth/client-metadata.json when public_url is https.",
    )
    oauth_dpop: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="http, authorization_code: DPoP (RFC 9449), tokens bound to a key the gateway keeps with the"
        " grant. 'auto': when the authorization server lists ES256 in dpop_signing_alg_values_supported, token"
        " requests carry a proof, and a token answered as DPoP is sent with a fresh proof on every request."
        " 'always': proofs even when it is not listed, and a token not bound to the key is refused. 'never': Bearer"
        " tokens only.",
    )
    # http: grants whose credential is a token the platform keeps fresh in a file (oauth_assertion_grants.py)
    oauth_assertion_file: Path | None = Field(
        default=None,
        description="http, jwt_bearer: file holding the workload's JWT (e.g. a Kubernetes projected service-account"
        " token), read again for every token request since the platform rotates it.",
    )
    oauth_id_token_file: Path | None = Field(
        default=None,
        description="http, token_exchange: file holding the gateway's own ID token at the enterprise IdP (its"
        " audience is oauth_idp_client_id), read again for every token request; the platform keeps it fresh.",
    )
    oauth_idp_token_url: str | None = Field(
        default=None, description="http, token_exchange: the enterprise IdP's token endpoint (RFC 8693 exchange)."
    )
    oauth_idp_client_id: str | None = Field(
        default=None, description="http, token_exchange: the gateway's client id at the IdP."
    )
    oauth_idp_client_secret_env: str | None = Field(
        default=None,
        description="http, token_exchange: env var holding the gateway's client secret at the IdP (sent with"
        " client_secret_basic); unset: the IdP client is public and only oauth_idp_client_id is sent.",
    )
    identity_header: str | None = Field(
        default=None, description="Header that carries the calling principal's id to this upstream."
    )
    # both
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to connect (and initialize).")
    call_timeout: float = Field(default=60.0, gt=0, description="Seconds one request to this upstream may take.")
    max_response_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest answer read from this upstream: a JSON body, one SSE line or event, one stdio line."
        " Over it the call fails naming the limit and the gateway stops reading (the connection is closed).",
    )
    protocol: Literal["auto", "2025-11-25", "2026-07-28"] = Field(
        default="auto",
        description="The protocol era spoken to this upstream. 'auto': ask server/discover once and try"
        " initialize; an upstream that takes initialize gets 2025-11-25, one that refuses it and speaks 2026-07-28"
        " gets 2026-07-28. A version pins that era (2026-07-28: http only; stdio upstreams speak 2025-11-25).",
    )
    unsolicited_requests: bool = Field(
        default=False,
        strict=True,
        description="Let this upstream's sampling/elicitation/roots requests reach clients on the GET stream with"
        " no call in flight (they still need the client's capability). http only: a stdio process is shared by"
        " every session, so such a request has no client to go to.",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be 1-32 characters of A-Z a-z 0-9 _ -")
        return v

    @field_validator("headers")
    @classmethod
    def _safe_headers(cls, v: dict[str, str]) -> dict[str, str]:
        # A CR or LF in a value would let it add headers (or a body) to every upstream request.
        for name, value in v.items():
            if not _HEADER_NAME_RE.match(name):
                raise ValueError(f"header name {name!r} is not an HTTP token")
            if _UNSAFE_HEADER_VALUE_RE.search(value):
                raise ValueError(f"value of header {name!r} contains CR, LF or NUL")
        return v

    @field_validator("identity_header")
    @classmethod
    def _identity_header_name(cls, v: str | None) -> str | None:
        if v is not None and not _HEADER_NAME_RE.match(v):
            raise ValueError(f"{v!r} is not an HTTP header name (a token)")
        return v

    @field_validator("prefix")
    @classmethod
    def _valid_prefix(cls, v: str | None) -> str | None:
        if v is not None and not _PREFIX_RE.match(v):
            raise ValueError("must be 0-32 characters of A-Z a-z 0-9 _ -")
        return v

    @model_validator(mode="after")
    def _transport_fields(self) -> UpstreamConfig:
        if self.transport == "http":
            if not self.url:
                raise ValueError("transport 'http' needs 'url'")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError("'url' must be http:// or https://")
        elif not self.command:
            raise ValueError("transport 'stdio' needs 'command'")
        elif self.unsolicited_requests:
            raise ValueError("'unsolicited_requests' needs transport 'http' (one stdio process serves all sessions)")
        elif self.protocol == "2026-07-28":
            raise ValueError("'protocol' 2026-07-28 needs transport 'http' (stdio upstreams speak 2025-11-25)")
        if self.bearer_token_env and self.bearer_token_file:
            raise ValueError("set only one of 'bearer_token_env' and 'bearer_token_file'")
        self._oauth_grant_fields()
        self._assertion_grant_fields()
        oauth = (self.oauth_token_url, self.oauth_client_id, self.oauth_client_secret_env, self.oauth_private_key_file)
        if self.oauth_grant in ("authorization_code", "jwt_bearer", "token_exchange"):
            pass  # a client id without a secret is a public client; each grant checks its own keys
        elif any(oauth) and not (self.oauth_client_id
                                 and (self.oauth_client_secret_env or self.oauth_private_key_file)):
            raise ValueError("OAuth client credentials need oauth_client_id and oauth_client_secret_env or"
                             " oauth_private_key_file (oauth_token_url is discovered when unset)")
        if (self.oauth_client_id or self.oauth_grant) and (self.bearer_token_env or self.bearer_token_file):
            raise ValueError("set either OAuth (oauth_client_id / oauth_grant) or a static bearer token, not both")
        return self

    def _oauth_grant_fields(self) -> None:
        """What ``oauth_grant`` needs and excludes; each error names the key and the fix."""
        if self.oauth_grant is not None and self.transport != "http":
            raise ValueError("'oauth_grant' needs transport 'http' (stdio upstreams get their credentials in 'env')")
        if self.oauth_grant == "client_credentials" and not self.oauth_client_id:
            raise ValueError("oauth_grant 'client_credentials' needs oauth_client_id (and oauth_client_secret_env or"
                             " oauth_private_key_file); for a grant an admin signs in for, set oauth_grant ="
                             " 'authorization_code'")
        if self.oauth_grant != "authorization_code":
            if self.oauth_client_metadata_url:
                raise ValueError("'oauth_client_metadata_url' is for oauth_grant = 'authorization_code' only")
            if self.oauth_dpop != "auto":
                raise ValueError("'oauth_dpop' is for oauth_grant = 'authorization_code' only (the grants a gateway"
                                 " gets without a person send Bearer tokens)")
            return
        if self.oauth_token_url:
            raise ValueError("oauth_grant 'authorization_code' discovers its endpoints from the upstream (RFC 9728,"
                             " RFC 8414): remove 'oauth_token_url'")
        if self.oauth_private_key_file or self.oauth_token_auth_method == "private_key_jwt":
            raise ValueError("oauth_grant 'authorization_code' authenticates with a client secret or none: remove"
                             " 'oauth_private_key_file' / use oauth_token_auth_method 'auto'")
        if self.oauth_client_secret_env and not self.oauth_client_id:
            raise ValueError("'oauth_client_secret_env' is the secret of a pre-registered client: set"
                             " 'oauth_client_id' too")
        url = self.oauth_client_metadata_url
        if url is not None and not url.startswith("https://"):
            raise ValueError("'oauth_client_metadata_url' must be an https:// URL (the authorization server fetches"
                             " it; SEP-991)")

    def _assertion_grant_fields(self) -> None:
        """What ``jwt_bearer`` and ``token_exchange`` need and exclude; each error names the key."""
        keys = {"oauth_assertion_file": "jwt_bearer", "oauth_id_token_file": "token_exchange",
                "oauth_idp_token_url": "token_exchange", "oauth_idp_client_id": "token_exchange",
                "oauth_idp_client_secret_env": "token_exchange"}
        for key, grant in keys.items():
            if getattr(self, key) is not None and self.oauth_grant != grant:
                raise ValueError(f"'{key}' is for oauth_grant = '{grant}' only")
        if self.oauth_grant == "jwt_bearer" and self.oauth_assertion_file is None:
            raise ValueError("oauth_grant 'jwt_bearer' needs 'oauth_assertion_file' (the file holding the workload's"
                             " JWT)")
        if self.oauth_grant == "jwt_bearer" and not self.oauth_client_id and (
                self.oauth_client_secret_env or self.oauth_private_key_file):
            raise ValueError("'oauth_client_secret_env' / 'oauth_private_key_file' authenticate a client: set"
                             " 'oauth_client_id' too")
        if self.oauth_grant != "token_exchange":
            return
        for key in ("oauth_id_token_file", "oauth_idp_token_url", "oauth_idp_client_id", "oauth_client_id"):
            if not getattr(self, key):
                raise ValueError(f"oauth_grant 'token_exchange' needs '{key}'")
        if not str(self.oauth_idp_token_url).startswith(("https://", "http://")):
            raise ValueError("'oauth_idp_token_url' must be an http:// or https:// URL")
        if not (self.oauth_client_secret_env or self.oauth_private_key_file):
            raise ValueError("oauth_grant 'token_exchange' needs 'oauth_client_secret_env' or 'oauth_private_key_file'"
                             " (the ID-JAG names the client, which authenticates at the upstream's authorization"
                             " server)")
        if self.oauth_token_url:
            raise ValueError("oauth_grant 'token_exchange' discovers the upstream's authorization server (its issuer"
                             " is the ID-JAG's audience): remove 'oauth_token_url'")

    @property
    def oauth_grant_kind(self) -> str | None:
        """The grant in effect: ``oauth_grant``, else client credentials when a client id is set, else None."""
        return self.oauth_grant or ("client_credentials" if self.oauth_client_id else None)

    @property
    def namespace(self) -> str:
        """The prefix tools of this upstream carry, without the separator."""
        return self.name if self.prefix is None else self.prefix

    def bearer_token(self) -> str | None:
        """Read the upstream's own token (never the client's) from the env var or file."""
        if self.bearer_token_env:
            token = os.environ.get(self.bearer_token_env)
            if not token:
                raise ValueError(f"env var {self.bearer_token_env} (upstream {self.name}) is empty or unset")
            return token
        if self.bearer_token_file:
            return self.bearer_token_file.read_text().strip()
        return None


class LimitsConfig(_Strict):
    """What one principal may make one gateway process hold. Counted per process: with N processes or
    replicas (``server.workers``, several gateways behind a balancer) a principal gets N times these."""

    sessions_per_principal: int = Field(
        default=100,
        ge=0,
        description="Live handshake-era sessions one principal may hold; initialize beyond it gets HTTP 429"
        " until one ends or idles out. 0: no limit.",
    )
    requests_per_second: float = Field(
        default=100.0,
        ge=0,
        description="Sustained HTTP requests per second per principal (a token bucket); over it HTTP 429 with"
        " Retry-After. 0: no limit.",
    )
    request_burst: int = Field(
        default=200, ge=1, description="Requests a principal may send at once above the sustained rate."
    )


class PolicyConfig(_Strict):
    """Which policy decides calls: a file (YAML or TOML, see docs/policy.md) or a shipped preset."""

    file: Path | None = Field(
        default=None, description="A policy file (YAML or TOML; policy/schema.json); reloaded when it changes."
    )
    preset: Literal["lockdown", "controlled", "open"] = Field(
        default="controlled", description="The shipped preset used when no file is set."
    )


class StoreConfig(_Strict):
    """Where state lives: pending approvals, pins, first use, suspensions, session legs, sessions."""

    kind: Literal["sqlite", "memory", "redis"] = Field(
        default="sqlite",
        description="sqlite (embedded file), redis (shared by several gateway processes), memory (tests).",
    )
    path: Path = Field(default=Path("triplock-state.sqlite"), description="The SQLite file (kind sqlite).")
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis URL (kind redis; also the audit stream's default): redis://, rediss://, unix://,"
        " redis+sentinel://host:26379[,host:port...]/service[/db] for a Sentinel-managed primary, or"
        " redis+cluster://host:6379[,host:port...] (rediss+cluster:// for TLS) for Redis Cluster, where every key"
        " of the store shares one hash tag ({triplock}:): one slot, for the availability of its primary and"
        " replicas, not sharding (the redis audit sink needs one server or a Sentinel service).",
    )
    timeout: float = Field(
        default=2.0, gt=0, le=60,
        description="Seconds one store operation may take (Redis socket timeout, SQLite busy timeout) before the"
        " store counts as unavailable: a frozen store fails closed instead of hanging calls.",
    )
    health_interval: float = Field(
        default=1.0, gt=0, le=60,
        description="Seconds between the store's health probes (a small write); while it fails, writes, E legs"
        " and holds are refused, even on sessions whose state is cached.",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str) -> str:
        # The URL's details are checked where the pool is made (adapters/stores/redis_connect.py).
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if scheme not in ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster",
                          "rediss+cluster"):
            raise ValueError(f"scheme {scheme or '(none)'!r} is not one of redis://, rediss://, unix://,"
                             " redis+sentinel://, rediss+sentinel://, redis+cluster://, rediss+cluster://")
        if scheme.endswith("+sentinel") and not value.partition("://")[2].partition("/")[2].strip("/"):
            raise ValueError("a Sentinel URL names its service: redis+sentinel://host:26379[,host:port...]/SERVICE[/db]")
        if scheme.endswith("+cluster") and not value.partition("://")[2].partition("/")[0].rpartition("@")[2]:
            raise ValueError("a Cluster URL names at least one node: redis+cluster://host:6379[,host:port...]")
        return value


class ApprovalsConfig(_Strict):
    """Holding calls for a human: how long a call waits, where approvers decide, who may."""

    hold_wait: float = Field(default=40.0, ge=0, le=600, description="Seconds a held call waits in-band.")
    ttl: float = Field(default=3600.0, gt=0, description="Seconds until an undecided approval expires.")
    console_url: str | None = Field(default=None, description="Where approvers decide (default: public_url).")
    max_scope_minutes: int = Field(
        default=60, ge=1, le=1440,
        description="The longest an approver may let one principal call one tool with any arguments"
        " (scope principal_tool), in minutes.",
    )
    end_user_categories: tuple[str, ...] = Field(
        default=(),
        description="Categories the agent's own user approves, asked through MCP elicitation when the client"
        " supports it (e.g. email_send_internal).",
    )
    approver_tokens_env: str = Field(
        default="TRIPLOCK_APPROVER_TOKENS",
        description="Env var with comma-separated name=token pairs for approvers (automation, local development);"
        " a token's name is its principal id. Principals whose roles approve use their own API key or JWT.",
    )


# Role names of control 6.1 (seed 000) plus the two gateway-specific ones.
DEFAULT_ROLE_NAMES = ("agents-run", "agents-build", "agents-admin", "approver", "auditor")
# Asymmetric algorithms only: "none" and HS* (a shared secret) can never be configured.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class RoleConfig(_Strict):
    """What one role grants. Patterns are fnmatch globs; a leading '!' excludes (within this role)."""

    call: tuple[str, ...] = Field(default=(), description="'upstream:tool' patterns this role may see and call.")
    approve: tuple[str, ...] = Field(default=(), description="Action categories this role may approve.")
    actions: tuple[str, ...] = Field(default=(), description="Admin actions: suspend, resume, pin, reload_policy...")


class TelemetryConfig(_Strict):
    """Traces and metrics. Exporters come from the standard ``OTEL_*`` env vars (see docs/telemetry.md)."""

    capture_content: bool = Field(
        default=False, description="Put tool arguments and results on spans (they may hold secrets)."
    )
    prometheus: bool = Field(default=True, description="Serve Prometheus metrics at metrics_path.")
    metrics_path: str = Field(default="/metrics", description="Path of the Prometheus endpoint.")
    service_name: str = Field(default="triplock", description="service.name unless OTEL_SERVICE_NAME is set.")


class AuditConfig(_Strict):
    """Where audit events go. An empty ``sinks`` turns the audit log off (not recommended)."""

    sinks: tuple[Literal["file", "stdout", "redis"], ...] = Field(
        default=("file",), description="Any of file, stdout, redis; [] turns the audit log off."
    )
    path: Path = Field(default=Path("triplock-audit.jsonl"), description="Active JSONL file; {pid} is expanded.")
    max_bytes: int = Field(default=100 * 1024 * 1024, ge=4096, description="Rotate the file past this size.")
    fsync: bool = Field(default=False, description="fsync after every batch (durable against power loss).")
    redis_url: str | None = Field(default=None, description="Defaults to store.redis_url.")
    redis_stream: str = Field(default="triplock:audit", description="Redis stream of the redis sink.")
    backlog_alert: int = Field(default=100_000, ge=1, description="Undelivered records that make health fail.")
    durable: bool = Field(
        default=True,
        description="Send a guarded call's answer only once its audit record is written by every sink (group "
        "commit); false answers at once and writes within ~50 ms, so a crash can lose the last answered calls.",
    )
    durable_timeout: float = Field(
        default=5.0, gt=0, le=300,
        description="Longest an answer waits for its record (a sink is down); then it is sent anyway and "
        "counted as undurable (audit health: undurable_answers).",
    )
    max_backlog: int = Field(
        default=200_000, ge=1,
        description="Records waiting for one sink at which new guarded calls are refused (fail closed) and "
        "/readyz is not ready, until the sink catches up.",
    )


class AuthConfig(_Strict):
    """Who may call: JWT access tokens (OAuth 2.1 resource server) and/or Triplock API keys.

    ``mode = "jwt"`` accepts JWTs and API keys (``tlk_`` prefix tells them apart);
    ``mode = "api_key"`` accepts API keys only; ``mode = "none"`` is local development.
    """

    mode: Literal["none", "api_key", "jwt"] = Field(
        default="none", description="none (loopback only, local development), api_key, or jwt (also API keys)."
    )
    resource: str | None = Field(
        default=None, description="Canonical resource URL (RFC 8707); default: server.public_url + server.path."
    )
    issuer: str | None = Field(default=None, description="jwt: the required 'iss'.")
    jwks_url: str | None = Field(default=None, description="jwt: where the IdP publishes its signing keys.")
    audience: str | None = Field(default=None, description="Required 'aud'; default: the canonical resource URL.")
    algorithms: tuple[str, ...] = Field(
        default=("RS256", "PS256", "ES256", "EdDSA"), description="Accepted JWT algorithms (asymmetric only)."
    )
    leeway_seconds: float = Field(default=30.0, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat.")
    required_scopes: tuple[str, ...] = Field(default=(), description="Scopes every access token must carry.")
    scopes_supported: tuple[str, ...] = Field(
        default=(), description="Scopes advertised in the protected-resource metadata (RFC 9728)."
    )
    jwks_cache_seconds: float = Field(default=600.0, gt=0, description="How long fetched signing keys are kept.")
    jwks_min_refresh_seconds: float = Field(default=30.0, ge=0, description="Rate limit of unknown-kid refetches.")
    groups_claim: str = Field(default="groups", description="Claim holding the principal's IdP groups.")
    agent_claim: str = Field(default="client_id", description="Claim naming the agent (OAuth client).")
    user_claim: str = Field(default="sub", description="Claim naming the user (the principal id).")
    api_keys: bool = Field(default=True, description="In jwt mode, also accept Triplock API keys.")
    api_keys_file: Path = Field(
        default=Path("triplock-keys.json"),
        description="The API key file (triplock keys create); a running gateway picks up changes within a second.",
    )
    groups: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="IdP group -> roles; a group named like a role always maps to it."
    )
    roles: dict[str, RoleConfig] | None = Field(default=None, description="Role definitions (default: 6.1 split).")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in v if a not in ASYMMETRIC_ALGORITHMS]
        if bad:
            raise ValueError(f"not allowed: {bad}; use asymmetric algorithms only ({sorted(ASYMMETRIC_ALGORITHMS)})")
        if not v:
            raise ValueError("at least one algorithm is needed")
        return v

    @model_validator(mode="after")
    def _jwt_fields(self) -> AuthConfig:
        if self.mode == "jwt" and not (self.issuer and self.jwks_url):
            raise ValueError("auth.mode 'jwt' needs 'issuer' and 'jwks_url'")
        return self


class Settings(BaseSettings):
    """The whole configuration of one gateway process."""

    model_config = SettingsConfigDict(env_prefix="TRIPLOCK_", env_nested_delimiter="__", extra="forbid", frozen=True)

    server: ServerConfig = ServerConfig()
    upstreams: tuple[UpstreamConfig, ...] = Field(default=(), description="The MCP servers behind the gateway.")
    demo_upstream: bool = Field(
        default=False, description="Run the bundled demo server as upstream 'demo' (stdio); on with no config file."
    )
    policy: PolicyConfig = PolicyConfig()
    store: StoreConfig = StoreConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    auth: AuthConfig = AuthConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    audit: AuditConfig = AuditConfig()
    limits: LimitsConfig = LimitsConfig()

    @model_validator(mode="after")
    def _unique_upstreams(self) -> Settings:
        # Every upstream the gateway will run, the bundled demo included: (config key, name, prefix key, prefix).
        ups = [(f"upstreams[{i}]", u.name, f"upstreams[{i}]." + ("name" if u.prefix is None else "prefix"),
                u.namespace) for i, u in enumerate(self.upstreams)]
        if self.demo_upstream:
            ups.append(("demo_upstream", "demo", "demo_upstream", "demo"))  # runs upstream 'demo', prefix 'demo'
        for j, (key, name, pkey, prefix) in enumerate(ups):
            for okey, oname, opkey, oprefix in ups[:j]:
                if name == oname:
                    raise ValueError(f"upstream name {name!r} is used twice: by {okey} and by {key}")
                # Tools are exposed as PREFIX__NAME: equal prefixes, or one inside the other's
                # namespace, would let one upstream's tool silently take the other's name.
                if prefix and oprefix and (prefix == oprefix or prefix.startswith(oprefix + "__")
                                           or oprefix.startswith(prefix + "__")):
                    raise ValueError(
                        f"upstream prefix collision: {opkey} (upstream {oname!r}, prefix {oprefix!r}) and {pkey} "
                        f"(upstream {name!r}, prefix {prefix!r}) would expose tools under the same names; "
                        "give one of them another prefix")
        if self.auth.mode == "none" and not self.server.is_loopback:
            raise ValueError("auth.mode 'none' is for local development only and needs a loopback server.host")
        if self.auth.mode == "jwt" and not (self.auth.resource or self.server.public_url or self.server.is_loopback):
            raise ValueError("auth.mode 'jwt' needs auth.resource or server.public_url (the token audience)")
        return self

    @property
    def canonical_resource(self) -> str:
        """The URL that names this gateway as an OAuth protected resource (RFC 8707 / RFC 9728)."""
        if self.auth.resource:
            return self.auth.resource
        srv = self.server
        base = (srv.public_url or f"http://{srv.host}:{srv.port}").rstrip("/")
        return base if base.endswith(srv.path) else base + srv.path

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file, so operators can override one key in a deployment.
        return (env_settings, init_settings)


QUICKSTART_POLICY = Path(__file__).with_name("quickstart_policy.yaml")


class ConfigError(Exception):
    """The configuration is invalid; the message names each bad key and why."""


def _env_source(loc: tuple[int | str, ...], environ: Mapping[str, str]) -> str | None:
    """The TRIPLOCK_* variable that set the value at ``loc`` (or one of its parents), if any."""
    names = {k.upper(): k for k in environ}
    for depth in range(len(loc), 0, -1):
        parts = loc[:depth]
        if any(isinstance(p, int) for p in parts):
            continue  # list items cannot be set one by one from the environment
        name = "TRIPLOCK_" + "__".join(str(p).upper() for p in parts)
        if name in names:
            return names[name]
    return None


def format_validation_error(err: ValidationError, environ: Mapping[str, str] | None = None) -> str:
    """Render pydantic errors as ``key.path: reason`` lines a person can act on.

    An unknown key says where it is and the closest known key; a value that came from a
    ``TRIPLOCK_*`` environment variable names the variable.
    """
    from policy.suggest import unknown_key_message  # only on the error path: importing policy/ costs ~0.1 s

    environ = os.environ if environ is None else environ
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            msg = unknown_key_message(Settings, loc)
        else:
            msg = e["msg"].removeprefix("Value error, ")
        source = _env_source(loc, environ) if loc else None
        lines.append(f"{key}: {msg}" + (f" (set by environment variable {source})" if source else ""))
    return "\n".join(lines)


def _env_problems(environ: Mapping[str, str]) -> list[str]:
    """``TRIPLOCK_SECTION__KEY`` variables whose section is no setting: a typo pydantic would ignore."""
    problems: list[str] = []
    sections = list(Settings.model_fields)
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("TRIPLOCK_") or "__" not in upper:
            continue
        section = upper.removeprefix("TRIPLOCK_").split("__", 1)[0].lower()
        if section in Settings.model_fields:
            continue
        from policy.suggest import closest  # only on the error path

        guess = closest(section, sections)
        hint = (f"did you mean TRIPLOCK_{guess.upper()}__{upper.split('__', 1)[1]}?" if guess
                else f"the sections are {', '.join(sections)}")
        problems.append(f"environment variable {name}: names no setting ({section!r} is not a section): {hint}")
    return problems


def _env_not_json(exc: SettingsError, environ: Mapping[str, str]) -> str:
    """Say which ``TRIPLOCK_<SECTION>`` variable is not JSON and what it should look like."""
    match = re.search(r'field "(\w+)"', str(exc))
    field = match.group(1) if match else None
    names = {k.upper(): k for k in environ}
    var = names.get(f"TRIPLOCK_{field.upper()}", f"TRIPLOCK_{field.upper()}") if field else "a TRIPLOCK_* variable"
    cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
    if field == "upstreams":
        example = f"""{var}='[{{"name": "crm", "transport": "http", "url": "https://crm.example/mcp"}}]'"""
    elif field is not None:
        example = f"{var}__KEY=value for one key, or {var}='{{\"key\": value}}' for the whole section"
    else:
        example = "TRIPLOCK_SECTION__KEY=value"
    return f"environment variable {var} is not valid JSON{cause}: a section set whole must be JSON; use {example}"


def load_settings(path: Path | None, *, demo_default: bool = True) -> Settings:
    """Load and validate settings from a TOML file (or embedded defaults when ``path`` is None).

    With no file, the gateway runs the bundled demo upstream on loopback with no
    authentication: the one-command quickstart. Every problem is a :class:`ConfigError`
    naming the key (or environment variable) and the fix.
    """
    data: dict[str, Any] = {}
    where = f"{path}: " if path else ""
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: file not found") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    elif demo_default:
        data = {"demo_upstream": True, "policy": {"file": QUICKSTART_POLICY}}
    env_problems = _env_problems(os.environ)
    if env_problems:
        raise ConfigError(f"{where}invalid configuration\n" + "\n".join(env_problems))
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{where}invalid configuration\n{format_validation_error(exc)}") from exc
    except SettingsError as exc:
        raise ConfigError(f"{where}invalid configuration\n{_env_not_json(exc, os.environ)}") from exc
