"""The policy file, as a typed pydantic model (the JSON schema in `policy/schema.json` is generated
from it).

Why a typed declarative schema for argument conditions instead of CEL: every condition the
gateway needs (recipient domains, URL hosts, path globs, amount thresholds) is a fixed shape
over named arguments. Declared as data, it is validated with line numbers at load, compiled
into set lookups and one regex per tool, and evaluated in well under a microsecond, with no
interpreter on the hot path (a CEL evaluation in Python costs tens of microseconds per
expression and adds a dependency). A policy author cannot write an expression that throws or
loops at call time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policy.models import Effect, Leg

RuleAction = Literal["allow", "hold", "deny"]
ActionControl = Literal["allow_all", "read_only", "custom"]
NewActionsDefault = Literal["deny", "allow", "hold"]

# The categories of seed 6.3: the minimum list every agent must gate behind a human.
APPROVAL_REQUIRED_DEFAULT = (
    "email_send",
    "calendar_invite_external",
    "salesforce_record_create_update_delete",
    "sharepoint_drive_bulk_write_or_delete",
    "github_push_merge_release",
    "slack_post_to_channel_or_external_dm",
    "mcp_first_invocation_of_tool",
    "financial_transaction_any",
)
APPROVAL_LOGGED_DEFAULT = (
    "drive_create_or_update_within_owned_folder",
    "notion_create_page_in_owned_workspace",
    "jira_comment_on_owned_ticket",
)
FIRST_USE_CATEGORY = "mcp_first_invocation_of_tool"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AmountThreshold(_Strict):
    """An amount argument above `over` raises the call's category (and makes it a write)."""

    args: list[str] = Field(default_factory=lambda: ["amount", "total", "value", "price", "sum"])
    over: float = 0.0
    category: str = "financial_transaction_any"


class Conditions(_Strict):
    """Argument-aware conditions. Lists at policy, upstream and tool level are merged (union)."""

    org_domains: list[str] = Field(
        default_factory=list, description="Recipients in these domains (or subdomains) do not count as E."
    )
    recipient_args: list[str] = Field(
        default_factory=lambda: [
            *("to", "cc", "bcc", "recipient", "recipients", "email", "emails", "email_address", "email_addresses"),
            *("attendees", "attendee", "participants", "participant", "invitees", "invitee", "guests"),
            *("user_email", "user_emails", "recipient_email", "share_with", "shared_with", "members"),
        ],
        description="Arguments that name who a call reaches (mail recipients, event participants, people a file "
        "is shared with). All internal: not E. For a calendar event or file share, none named: not E either.",
    )
    internal_categories: dict[str, str] = Field(
        default_factory=lambda: {
            "email_send": "email_send_internal",
            "calendar_invite_external": "calendar_invite_internal",
            "slack_post_to_channel_or_external_dm": "chat_post_internal",
            "drive_share_external": "drive_share_internal",
        },
        description="Category a call takes when all its recipients are internal.",
    )
    url_allowlist: list[str] = Field(
        default_factory=list,
        description="Hosts ('docs.python.org') or subdomain wildcards ('*.example.com') that count as neither E nor U.",
    )
    url_args: list[str] = Field(default_factory=lambda: ["url", "uri", "href", "link", "endpoint"])
    deny_read_paths: list[str] = Field(
        default_factory=list, description="Path globs ('**/.env', '**/.ssh/**') no call may touch: deny."
    )
    path_args: list[str] = Field(
        default_factory=lambda: [
            "path",
            "paths",
            "file",
            "files",
            "filename",
            "filepath",
            "file_path",
            "dir",
            "directory",
            "source",
            "target",
            "src",
            "dest",
        ]
    )
    amounts: list[AmountThreshold] = Field(default_factory=list)


class ToolEntry(_Strict):
    """Classification of one tool (or every tool matching a glob) of an upstream."""

    legs: list[Leg] | None = None
    effect: Effect | None = None
    category: str | None = None
    conditions: Conditions | None = None


class ResourceEntry(_Strict):
    """Classification of one resource URI (or every URI matching a glob) of an upstream.

    Reading a resource is always a read; only its legs and category are set here. Legs left
    unset come from the upstream's catalog app, else fail closed to P+U."""

    legs: list[Leg] | None = None
    category: str | None = None


class PromptEntry(_Strict):
    """Classification of one prompt (or every prompt matching a name glob) of an upstream.

    Getting a prompt is always a read; legs left unset come from the upstream's catalog app,
    else fail closed to P+U."""

    legs: list[Leg] | None = None
    category: str | None = None


class UpstreamPolicy(_Strict):
    """Per-upstream settings: action control (seed 6.2), trust in annotations, mode, tools."""

    enabled: bool = True
    app: str | None = Field(default=None, description="Catalog app this upstream is (gmail, slack, ...).")
    trust_annotations: bool = False
    mode: Literal["enforce", "monitor"] | None = None
    action_control: ActionControl = "allow_all"
    actions_allowed: list[str] = Field(default_factory=list)
    actions_denied: list[str] = Field(default_factory=list)
    new_actions_default: NewActionsDefault = "deny"
    conditions: Conditions | None = None
    tools: dict[str, ToolEntry] = Field(
        default_factory=dict, description="Tool name or glob -> entry; exact names win, then globs in order."
    )
    resources: dict[str, ResourceEntry] = Field(
        default_factory=dict,
        description="Resource URI or URI glob ('*' within a path segment, '**' across '/') -> entry; "
        "exact URIs win, then globs in order. Unclassified resources count as P+U.",
    )
    prompts: dict[str, PromptEntry] = Field(
        default_factory=dict,
        description="Prompt name or glob -> entry; exact names win, then globs in order. "
        "Unclassified prompts count as P+U.",
    )


class Rule(_Strict):
    """An explicit rule. Empty match lists match anything; non-empty lists match any member.

    `tools`, `resources` and `prompts` also choose the kinds a rule applies to: a rule that lists
    none of them applies to every kind; otherwise only to the kinds it lists (and names).
    """

    id: str = Field(min_length=1)
    action: RuleAction
    reason: str | None = None
    upstreams: list[str] = Field(default_factory=list, description="Upstream names or globs.")
    tools: list[str] = Field(default_factory=list, description="Tool names or globs (without upstream).")
    resources: list[str] = Field(
        default_factory=list, description="Resource URIs or URI globs ('*' within a segment, '**' across '/')."
    )
    prompts: list[str] = Field(default_factory=list, description="Prompt names or globs (without upstream).")
    categories: list[str] = Field(default_factory=list)
    effects: list[Effect] = Field(default_factory=list)
    principals: list[str] = Field(default_factory=list)
    agents: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    call_legs_any: list[Leg] = Field(default_factory=list, description="The call (after conditions) touches any.")
    session_legs_any: list[Leg] = Field(
        default_factory=list, description="The session already holds any. Only for hold/deny rules."
    )

    @model_validator(mode="after")
    def _monotone(self) -> Rule:
        # An allow that switches on as the session gains legs would let a riskier session through
        # where a safer one was held: forbidden, so that more legs never means more allowed.
        if self.action == "allow" and self.session_legs_any:
            raise ValueError("session_legs_any is only allowed on hold or deny rules")
        return self


class LegsScope(_Strict):
    """Where legs (and the memory of untrusted values) accumulate, and for how long.

    `both` (the default): per MCP session, and per principal over a sliding window, so that
    reading private data in one session and sending it from another (or from a sessionless
    request) is still one trifecta. `session`: per MCP session only. `principal`: per principal
    over the window only. Every key expires: a principal's after `window_seconds` without a new
    leg, a session's after `session_ttl_seconds`.
    """

    scope: Literal["session", "principal", "both"] = "both"
    window_seconds: int = Field(
        default=3600, gt=0, description="Sliding window over which a principal's legs and untrusted values count."
    )
    session_ttl_seconds: int = Field(
        default=86400, gt=0, description="How long a session's legs are kept after their last change."
    )
    memory_limit: int = Field(
        default=512,
        ge=16,
        le=100_000,
        description="Untrusted values remembered per session and per principal; beyond it, every call "
        "that acts on the world and carries a value is held (fail closed).",
    )


class FirstUse(_Strict):
    """Hold the first invocation of each tool (seed 6.3 `mcp_first_invocation_of_tool`).

    `enabled` is the one switch: `approval_required_actions` may name the category only while it
    is on (see `PolicyFile._first_use_is_one_switch`). `effects` narrows the holds to tools of
    those effects; a tool of another effect is still pinned on its first successful call.
    """

    enabled: bool = Field(
        default=True, description="The one switch for first-use holds (and the 6.3 category's meaning)."
    )
    scope: Literal["tool", "principal_tool"] = "tool"
    effects: list[Effect] = Field(
        default_factory=lambda: list(Effect),
        min_length=1,
        description="Effects whose tools are held on first use; e.g. [write, destructive] never holds a read "
        "(a read's definition is still pinned on its first successful call).",
    )


class Defaults(_Strict):
    """Effects for calls no explicit rule decided."""

    read: RuleAction = "allow"
    write: RuleAction = "hold"
    destructive: RuleAction = "hold"
    unknown: Literal["hold", "deny"] = "hold"
    store_unavailable_reads: Literal["allow", "deny"] = "allow"


class PolicyFile(_Strict):
    """A Triplock policy file (YAML or TOML)."""

    version: Literal[1] = 1
    name: str = "custom"
    description: str = ""
    mode: Literal["enforce", "monitor"] = "enforce"
    strict: bool = Field(default=False, description="Deny (instead of hold) a call that completes the trifecta.")
    legs: LegsScope = Field(default_factory=LegsScope)
    first_use: FirstUse = Field(default_factory=FirstUse)
    defaults: Defaults = Field(default_factory=Defaults)
    approval_required_actions: list[str] = Field(default_factory=lambda: list(APPROVAL_REQUIRED_DEFAULT))
    approval_logged_actions: list[str] = Field(default_factory=lambda: list(APPROVAL_LOGGED_DEFAULT))
    conditions: Conditions = Field(default_factory=Conditions)
    default_upstream: UpstreamPolicy = Field(
        default_factory=UpstreamPolicy, description="Settings for upstreams not listed under `upstreams`."
    )
    upstreams: dict[str, UpstreamPolicy] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _first_use_is_one_switch(cls, data: object) -> object:
        """`first_use.enabled: false` with `mcp_first_invocation_of_tool` listed is a contradiction:
        refused, naming both keys. A file that switches first use off and keeps the default list
        gets the default list without the category."""
        if not isinstance(data, dict):
            return data
        first_use = data.get("first_use")
        if isinstance(first_use, FirstUse):
            switched_off = not first_use.enabled
        elif isinstance(first_use, dict) and "enabled" in first_use:
            try:  # the switch as pydantic reads it ("off", 0, ...); a bad value is reported by the field
                switched_off = not FirstUse.model_validate(first_use).enabled
            except ValueError:
                return data
        else:
            return data
        if not switched_off:
            return data
        required = data.get("approval_required_actions")
        if required is None:
            return {**data, "approval_required_actions": [c for c in APPROVAL_REQUIRED_DEFAULT
                                                          if c != FIRST_USE_CATEGORY]}
        if isinstance(required, list) and FIRST_USE_CATEGORY in required:
            raise ValueError(
                f"first_use.enabled is false but approval_required_actions lists {FIRST_USE_CATEGORY!r}: "
                "first_use.enabled is the one switch for first-use holds; remove "
                f"{FIRST_USE_CATEGORY!r} from approval_required_actions, or set first_use.enabled: true"
            )
        return data

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        return rules

    @field_validator("upstreams")
    @classmethod
    def _upstream_names(cls, upstreams: dict[str, UpstreamPolicy]) -> dict[str, UpstreamPolicy]:
        for name in upstreams:
            if "__" in name:
                raise ValueError(f"upstream name {name!r} must not contain the separator '__'")
        return upstreams
