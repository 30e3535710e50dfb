"""What each principal may do: groups map to roles, roles grant tools, approval categories, actions.

The default split follows control 6.1 of seed 000 (``agents-run``, ``agents-build``,
``agents-admin``) plus the gateway's own ``approver`` and ``auditor``:

=============  ==========================  ===================  =========================================
role           may see and call            may approve          actions
=============  ==========================  ===================  =========================================
agents-run     every published tool        -                    -
agents-build   every tool                  -                    explain_policy
agents-admin   every tool                  -                    suspend, resume, pin, reload_policy, ...
approver       -                           every category       list_approvals
auditor        -                           -                    read_audit, list_suspensions, ...
=============  ==========================  ===================  =========================================

"Published" is, by default, everything the gateway exposes; operators narrow ``agents-run``
with patterns such as ``"github:*"`` or ``"!*:delete_*"``. Separation of duties is deliberate:
admins do not approve by default, approvers cannot call tools, and nobody approves their own
call (the store enforces that last rule).

:class:`AccessPolicy` is pure (no I/O) and memoises per (roles, upstream, tool), because
``tools/list`` asks it once per tool per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Protocol

from gateway.config import AuthConfig, RoleConfig

ACTIONS = frozenset(
    {
        "suspend",  # suspend an agent, principal, upstream or tool (control 6.5)
        "resume",
        "list_suspensions",
        "pin",  # re-approve a changed tool definition
        "reload_policy",
        "explain_policy",
        "list_approvals",
        "read_audit",
        "manage_keys",
        "show_state",  # see what the gateway remembers of a principal or session (legs, untrusted values)
        "clear_state",  # make the gateway forget it
        "connect_upstream",  # sign in for an upstream that needs a person's OAuth grant, and see its status
    }
)

DEFAULT_ROLES: dict[str, RoleConfig] = {
    "agents-run": RoleConfig(call=("*",)),
    "agents-build": RoleConfig(call=("*",), actions=("explain_policy",)),
    "agents-admin": RoleConfig(
        call=("*",),
        actions=("suspend", "resume", "list_suspensions", "pin", "reload_policy", "explain_policy",
                 "list_approvals", "read_audit", "manage_keys", "show_state", "clear_state", "connect_upstream"),
    ),
    "approver": RoleConfig(approve=("*",), actions=("list_approvals",)),
    "auditor": RoleConfig(actions=("read_audit", "list_suspensions", "list_approvals", "explain_policy",
                                   "show_state")),
}


class Subject(Protocol):
    """Anything that says who is asking: a Principal, or a request context carrying groups."""

    @property
    def groups(self) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class _Grant:
    """One role's patterns, split into includes and '!' excludes."""

    include: tuple[str, ...]
    exclude: tuple[str, ...]

    @classmethod
    def of(cls, patterns: Iterable[str]) -> _Grant:
        pats = tuple(patterns)
        return cls(tuple(p for p in pats if not p.startswith("!")), tuple(p[1:] for p in pats if p.startswith("!")))

    def matches(self, value: str) -> bool:
        # Excludes only narrow the role they are written in; another role may still grant it.
        return any(fnmatchcase(value, p) for p in self.include) and not any(
            fnmatchcase(value, p) for p in self.exclude
        )


class AccessPolicy:
    """Pure access decisions from groups → roles → grants."""

    def __init__(
        self, roles: Mapping[str, RoleConfig] | None = None, groups: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        defs = dict(DEFAULT_ROLES if roles is None else roles)
        for name, role in defs.items():
            unknown = set(role.actions) - ACTIONS
            if unknown:
                raise ValueError(f"role {name!r}: unknown actions {sorted(unknown)}; known: {sorted(ACTIONS)}")
        self.role_names = frozenset(defs)
        self._call = {name: _Grant.of(r.call) for name, r in defs.items()}
        self._approve = {name: _Grant.of(r.approve) for name, r in defs.items()}
        self._actions = {name: frozenset(r.actions) for name, r in defs.items()}
        # A group named exactly like a role maps to it: the zero-config IdP setup of control 6.1.
        mapping: dict[str, frozenset[str]] = {name: frozenset({name}) for name in defs}
        for group, names in (groups or {}).items():
            unknown_roles = set(names) - self.role_names
            if unknown_roles:
                raise ValueError(f"group {group!r} maps to unknown roles {sorted(unknown_roles)}")
            mapping[group] = frozenset(names)
        self._group_roles = mapping
        self._may_call_cached = lru_cache(maxsize=65536)(self._may_call_uncached)
        self._roles_cached = lru_cache(maxsize=4096)(self._roles_uncached)

    @classmethod
    def from_config(cls, auth: AuthConfig) -> AccessPolicy:
        """The policy an ``[auth]`` section describes (default roles when it names none)."""
        return cls(auth.roles, auth.groups)

    def roles_for(self, groups: Iterable[str]) -> frozenset[str]:
        """The roles a set of IdP groups confers."""
        out: set[str] = set()
        for g in groups:
            out |= self._group_roles.get(g, frozenset())
        return frozenset(out)

    def roles_of(self, who: Subject) -> frozenset[str]:
        """Roles from the subject's groups, plus any roles it already carries (a Principal's)."""
        carried = getattr(who, "roles", None) or frozenset()
        return self._roles_cached(frozenset(carried), frozenset(who.groups))

    def _roles_uncached(self, carried: frozenset[str], groups: frozenset[str]) -> frozenset[str]:
        return (carried & self.role_names) | self.roles_for(groups)

    def may_call(self, who: Subject, upstream: str, tool: str) -> bool:
        """Whether ``who`` may see and call ``tool`` of ``upstream`` (listing uses the same answer)."""
        return self._may_call_cached(self.roles_of(who), upstream, tool)

    def _may_call_uncached(self, roles: frozenset[str], upstream: str, tool: str) -> bool:
        target = f"{upstream}:{tool}"
        return any(self._call[r].matches(target) for r in roles)

    def may_use_upstream(self, who: Subject, upstream: str) -> bool:
        """Whether any tool of ``upstream`` could be granted: gates its prompts and resources."""
        # The upstream half of each 'upstream:tool' pattern ('*' alone covers every upstream).
        return any(
            fnmatchcase(upstream, p.split(":", 1)[0]) for r in self.roles_of(who) for p in self._call[r].include
        )

    def may_approve(self, who: Subject, category: str | None) -> bool:
        """Whether ``who`` may decide held calls of ``category`` (None: uncategorised)."""
        value = category or "uncategorized"
        return any(self._approve[r].matches(value) for r in self.roles_of(who))

    def approves_anything(self, who: Subject) -> bool:
        """Whether any of ``who``'s roles grants approval rights at all (``approve`` patterns)."""
        return any(self._approve[r].include for r in self.roles_of(who))

    def may(self, who: Subject, action: str) -> bool:
        """Whether ``who`` may take an admin ``action`` (one of :data:`ACTIONS`)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        return any(action in self._actions[r] for r in self.roles_of(who))
