"""Every check ``triplock serve`` makes before it starts, so ``triplock config check`` can make them too.

Validating the TOML is not enough: a config can name an environment variable that is not set
(an upstream's token), a policy file that does not compile, a key file that is not one, or an
audit directory the process cannot write. Each of these is found here, before anything starts,
and reported as one line naming the key and the fix. Warnings are gaps that do not stop a start
but leave something silently broken (nobody can approve held calls; no upstreams).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from gateway.approvals.core import TokenApproverAuth
from gateway.config import Settings
from gateway.guard.policy_runtime import load_configured_policy
from gateway.identity.api_keys import KeyStore
from gateway.identity.roles import AccessPolicy
from policy import CompiledPolicy, PolicyError
from policy.loader import known_categories
from policy.suggest import closest


@dataclass
class Findings:
    """What the checks found: errors stop a start, warnings are logged."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    policy: CompiledPolicy | None = None  # the compiled policy, when it loads


def _env_set(name: str) -> bool:
    return bool(os.environ.get(name, "").strip())


def _writable_dir(path: Path) -> str | None:
    """Why a file at ``path`` cannot be created or written, or None when it can."""
    path = Path(str(path).replace("{pid}", str(os.getpid())))
    if path.exists():
        if path.is_dir():
            return f"{path} is a directory"
        return None if os.access(path, os.W_OK) else f"{path} is not writable by this user"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the sinks create missing directories: the first existing one must be writable
    if not parent.is_dir():
        return f"{parent} is not a directory"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot create files in {parent}"


def _upstreams(settings: Settings, found: Findings) -> None:
    for i, up in enumerate(settings.upstreams):
        key = f"upstreams[{i}]"
        if up.bearer_token_env and not _env_set(up.bearer_token_env):
            found.errors.append(
                f"{key}.bearer_token_env: environment variable {up.bearer_token_env} (upstream {up.name!r}) is "
                f"unset or empty: export it with the upstream's token, or use bearer_token_file")
        if up.bearer_token_file:
            try:
                if not up.bearer_token_file.read_text(encoding="utf-8").strip():
                    found.errors.append(f"{key}.bearer_token_file: {up.bearer_token_file} is empty "
                                        f"(upstream {up.name!r}): put the upstream's token in it")
            except (OSError, UnicodeDecodeError) as exc:
                found.errors.append(f"{key}.bearer_token_file: cannot read {up.bearer_token_file} "
                                    f"(upstream {up.name!r}): {exc.__class__.__name__}: {exc}")
        if up.oauth_client_secret_env and not _env_set(up.oauth_client_secret_env):
            found.errors.append(
                f"{key}.oauth_client_secret_env: environment variable {up.oauth_client_secret_env} "
                f"(upstream {up.name!r}) is unset or empty: export the OAuth client secret")
        if up.transport == "stdio" and up.command and shutil.which(up.command, path=up.env.get("PATH")) is None:
            found.warnings.append(f"{key}.command: {up.command!r} (upstream {up.name!r}) is not found on PATH: "
                                  "the upstream will stay down")
        if up.cwd is not None and not up.cwd.is_dir():
            found.errors.append(f"{key}.cwd: {up.cwd} is not a directory (upstream {up.name!r})")
    if not settings.upstreams and not settings.demo_upstream:
        found.warnings.append("upstreams: none configured: agents will see no tools and /readyz stays not ready "
                              "(503) until an [[upstreams]] entry is added")


def _policy(settings: Settings, found: Findings) -> None:
    try:
        found.policy = load_configured_policy(settings.policy)
    except PolicyError as exc:
        for issue in exc.issues:
            found.errors.append(f"policy.file: {exc.source}: {issue}")
        return
    known = known_categories(found.policy.model)
    for category in settings.approvals.end_user_categories:
        if category not in known:
            guess = closest(category, known)
            hint = f"did you mean {guess!r}?" if guess else "no call can have it"
            found.warnings.append(f"approvals.end_user_categories: {category!r} is no category the policy gives "
                                  f"a call: {hint}")


def approvers_reachable(settings: Settings, access: AccessPolicy | None) -> str | None:
    """How approvers can log in to the console, or None when nobody can."""
    tokens_env = settings.approvals.approver_tokens_env
    if _env_set(tokens_env):
        return f"approver tokens in {tokens_env}"
    auth = settings.auth
    if auth.mode == "none" or access is None:
        return None
    approving = sorted(r for r in access.role_names if access.approves_anything(_Groups(frozenset({r}))))
    if not approving:
        return None
    if auth.mode == "jwt":
        return f"SSO principals with role {', '.join(approving)}"
    if auth.mode == "api_key" or auth.api_keys:
        try:
            keys = KeyStore(auth.api_keys_file).list()
        except (OSError, ValueError):
            return None
        holders = sorted({k.principal for k in keys
                          if k.active and access.approves_anything(_Groups(frozenset(k.groups)))})
        if holders:
            return f"API keys of {', '.join(holders)}"
    return None


@dataclass(frozen=True)
class _Groups:
    groups: frozenset[str]


def _identity(settings: Settings, found: Findings) -> AccessPolicy | None:
    auth = settings.auth
    access: AccessPolicy | None = None
    try:
        access = AccessPolicy.from_config(auth)
    except ValueError as exc:
        found.errors.append(f"auth.roles / auth.groups: {exc}")
    if auth.mode != "none" and (auth.mode == "api_key" or auth.api_keys):
        try:
            KeyStore(auth.api_keys_file).load()
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
            found.errors.append(
                f"auth.api_keys_file: {exc}: fix or move the file (triplock keys create writes a new one)")
        else:
            if not auth.api_keys_file.exists() and auth.mode == "api_key":
                found.warnings.append(f"auth.api_keys_file: {auth.api_keys_file} does not exist yet: no agent can "
                                      "authenticate until `triplock keys create --config FILE ...` writes a key")
    tokens_env = settings.approvals.approver_tokens_env
    try:
        TokenApproverAuth.from_env(tokens_env)
    except ValueError as exc:
        found.errors.append(f"approvals.approver_tokens_env: environment variable {tokens_env}: {exc}")
    return access


def _files(settings: Settings, found: Findings) -> None:
    audit = settings.audit
    if "file" in audit.sinks:
        problem = _writable_dir(audit.path)
        if problem:
            found.errors.append(f"audit.path: {problem}: choose a directory this user can write")
        if settings.server.workers > 1 and "{pid}" not in str(audit.path):
            found.errors.append(
                "audit.path: with server.workers > 1 it must contain {pid} (one hash chain per process)")
    if not audit.sinks:
        found.warnings.append("audit.sinks: [] turns the audit log off: no record of any decision is kept")
    if settings.store.kind == "sqlite":
        problem = _writable_dir(settings.store.path)
        if problem:
            found.errors.append(f"store.path: {problem}: choose a directory this user can write")


def _store_url(settings: Settings, found: Findings) -> None:
    """A Sentinel or Cluster URL parsed as the store will parse it (the redis audit sink builds its client alike)."""
    from adapters.stores.redis_connect import is_cluster_url, is_sentinel_url, parse_cluster_url, parse_sentinel_url

    url = settings.store.redis_url
    if settings.store.kind == "redis":
        try:
            if is_sentinel_url(url):
                parse_sentinel_url(url)
            elif is_cluster_url(url):
                parse_cluster_url(url)
        except ValueError as exc:  # the messages never quote the password
            found.errors.append(f"store.redis_url: {exc}")


def check_settings(settings: Settings) -> Findings:
    """Run every start-up check on validated settings (files and environment; no network)."""
    found = Findings()
    _upstreams(settings, found)
    _policy(settings, found)
    access = _identity(settings, found)
    _files(settings, found)
    _store_url(settings, found)
    if not found.errors and approvers_reachable(settings, access) is None:
        found.warnings.append(
            f"no approver can log in: held calls will wait for nobody. Set {settings.approvals.approver_tokens_env}"
            "=name=token, or (auth.mode api_key/jwt) give a principal a role that approves "
            "(`triplock keys create --principal ops --groups approver`)")
    return found
