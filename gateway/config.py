"""Typed configuration: one TOML file, validated at start, overridable by ``TRIPLOCK_*`` env vars.

Env overrides use ``__`` between levels: ``TRIPLOCK_SERVER__PORT=9000``.
Errors name the key and the reason (see :func:`format_validation_error`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{0,32}$")


class _Strict(BaseModel):
    # Unknown keys are typos far more often than intent: refuse them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    path: str = "/mcp"
    public_url: str | None = Field(default=None, description="Canonical URL agents use; names the gateway.")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=64, ge=2, le=10_000)
    session_idle_seconds: float = Field(default=1800.0, gt=0)
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = Field(
        default=(), description="Extra Host header values accepted besides the bind address."
    )
    workers: int = Field(default=1, ge=1, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("path")
    @classmethod
    def _path_starts_with_slash(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v

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
    name: str
    prefix: str | None = Field(default=None, description="Namespace prefix; defaults to the name; may be ''.")
    transport: Literal["http", "stdio"]
    # http
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    bearer_token_env: str | None = None
    bearer_token_file: Path | None = None
    # stdio
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    # both
    connect_timeout: float = Field(default=10.0, gt=0)
    call_timeout: float = Field(default=60.0, gt=0)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be 1-32 characters of A-Z a-z 0-9 _ -")
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
        if self.bearer_token_env and self.bearer_token_file:
            raise ValueError("set only one of 'bearer_token_env' and 'bearer_token_file'")
        return self

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


class PolicyConfig(_Strict):
    file: Path | None = None
    preset: Literal["lockdown", "controlled", "open"] = "controlled"


class StoreConfig(_Strict):
    kind: Literal["sqlite", "memory", "redis"] = "sqlite"
    path: Path = Path("triplock-state.sqlite")
    redis_url: str = "redis://127.0.0.1:6379/0"


class AuthConfig(_Strict):
    mode: Literal["none", "api_key", "jwt"] = "none"


class Settings(BaseSettings):
    """The whole configuration of one gateway process."""

    model_config = SettingsConfigDict(env_prefix="TRIPLOCK_", env_nested_delimiter="__", extra="forbid", frozen=True)

    server: ServerConfig = ServerConfig()
    upstreams: tuple[UpstreamConfig, ...] = ()
    demo_upstream: bool = Field(default=False, description="Run the bundled demo upstream in-process (stdio).")
    policy: PolicyConfig = PolicyConfig()
    store: StoreConfig = StoreConfig()
    auth: AuthConfig = AuthConfig()

    @model_validator(mode="after")
    def _unique_upstreams(self) -> Settings:
        names: set[str] = set()
        prefixes: set[str] = set()
        for up in self.upstreams:
            if up.name in names:
                raise ValueError(f"upstream name {up.name!r} is used twice")
            names.add(up.name)
            if up.namespace in prefixes and up.namespace:
                raise ValueError(f"upstream prefix {up.namespace!r} is used twice")
            prefixes.add(up.namespace)
        if self.auth.mode == "none" and not self.server.is_loopback:
            raise ValueError("auth.mode 'none' is for local development only and needs a loopback server.host")
        return self

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


class ConfigError(Exception):
    """The configuration is invalid; the message names each bad key and why."""


def format_validation_error(err: ValidationError) -> str:
    """Render pydantic errors as ``key.path: reason`` lines a person can act on."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}")
    return "\n".join(lines)


def load_settings(path: Path | None, *, demo_default: bool = True) -> Settings:
    """Load and validate settings from a TOML file (or embedded defaults when ``path`` is None).

    With no file, the gateway runs the bundled demo upstream on loopback with no
    authentication: the one-command quickstart.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    elif demo_default:
        data = {"demo_upstream": True}
    try:
        return Settings(**data)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}invalid configuration\n{format_validation_error(exc)}") from exc
