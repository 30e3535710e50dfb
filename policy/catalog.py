"""Built-in catalog of well-known connectors: the app split of seed 6.4.

Each app lists the legs it can touch (private data read, untrusted content ingest, external
send) exactly as 6.4 classifies them, plus which 6.3 action category its writes fall into.
The trifecta report uses the app legs directly; tool classification adds them to the read
legs a tool's own name gives (an app adds legs, never removes the tool's own) and uses the
categories for its writes. An upstream is an app only when the policy says so (`app:`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from policy.models import Leg

P, U, E = Leg.P, Leg.U, Leg.E


@dataclass(frozen=True)
class App:
    """A well-known connector."""

    name: str
    legs: frozenset[Leg]
    aliases: tuple[str, ...] = ()
    # write verb class -> category; see vocabulary.WRITE_CLASSES for the classes
    categories: dict[str, str] = field(default_factory=dict)
    default_write_category: str | None = None

    @property
    def read_legs(self) -> frozenset[Leg]:
        """Legs a read-only tool of this app touches: its P/U legs; for web search and browsing
        also E, because the query or URL itself leaves the organisation."""
        legs = self.legs & {P, U}
        return legs | {E} if self.name in ("web_search", "browser") else legs


_DRIVE = {
    "delete": "sharepoint_drive_bulk_write_or_delete",
    "bulk": "sharepoint_drive_bulk_write_or_delete",
    "create": "drive_create_or_update_within_owned_folder",
    "update": "drive_create_or_update_within_owned_folder",
}
_MAIL = {"send": "email_send", "create": "email_draft", "update": "email_modify", "delete": "email_delete"}
_CRM = dict.fromkeys(("create", "update", "delete", "bulk"), "salesforce_record_create_update_delete")
_GIT = {"push": "github_push_merge_release", "delete": "github_push_merge_release"}

APPS: tuple[App, ...] = (
    App("gmail", frozenset({P, U, E}), ("google_mail",), _MAIL, "email_modify"),
    App("outlook", frozenset({P, U, E}), ("microsoft_outlook", "exchange"), _MAIL, "email_modify"),
    App("google_drive", frozenset({P}), ("drive", "gdrive", "google_docs", "docs", "google_sheets"), _DRIVE),
    App("sharepoint", frozenset({P}), ("microsoft_sharepoint",), _DRIVE, "sharepoint_drive_bulk_write_or_delete"),
    App("onedrive", frozenset({P}), ("microsoft_onedrive",), _DRIVE),
    App("box", frozenset({P}), (), _DRIVE),
    App("dropbox", frozenset({P}), (), _DRIVE),
    App(
        "google_calendar",
        frozenset({P, U, E}),
        ("calendar", "gcal", "outlook_calendar"),
        {"send": "calendar_invite_external", "create": "calendar_invite_external"},
        "calendar_event_write",
    ),
    App("salesforce", frozenset({P, E}), ("sfdc", "crm"), _CRM, "salesforce_record_create_update_delete"),
    App("notion", frozenset({P, U}), (), {"create": "notion_create_page_in_owned_workspace"}, "notion_write"),
    App("confluence", frozenset({P, U}), (), {}, "confluence_write"),
    App("jira", frozenset({P, U}), (), {"comment": "jira_comment_on_owned_ticket"}, "jira_write"),
    App("atlassian_rovo", frozenset({P}), ("rovo", "atlassian"), {}, "atlassian_write"),
    App("github", frozenset({P, E}), (), _GIT, "github_write"),
    App("gitlab", frozenset({P, E}), (), _GIT, "gitlab_write"),
    App(
        "slack",
        frozenset({U, E}),
        (),
        {"send": "slack_post_to_channel_or_external_dm", "create": "slack_post_to_channel_or_external_dm"},
        "slack_write",
    ),
    App("web_search", frozenset({U, E}), ("search_web", "websearch", "bing", "brave_search"), {}, "web_write"),
    App("browser", frozenset({U, E}), ("web_browser", "browser_use", "playwright", "puppeteer"), {}, "browser_action"),
)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


_BY_ALIAS: dict[str, App] = {}
for _app in APPS:
    for _alias in (_app.name, *_app.aliases):
        _BY_ALIAS[_norm(_alias)] = _app
        _BY_ALIAS[_norm(_alias).replace("_", "")] = _app


def lookup_app(name: str | None) -> App | None:
    """The catalog app for a name such as 'Gmail', 'google-drive', 'Google Drive', 'web search'."""
    if not name:
        return None
    key = _norm(name)
    return _BY_ALIAS.get(key) or _BY_ALIAS.get(key.replace("_", ""))


def app_for_upstream(upstream: str, declared: str | None) -> App | None:
    """The app an upstream is, as the policy declares it (`app:`); None when it declares none.

    Never by the upstream's name: whoever names an upstream `slack` would otherwise turn its
    `get_webpage` into a plain read of a chat app. `upstream` is kept for callers' symmetry."""
    del upstream
    return lookup_app(declared) if declared else None


def app_for_tool_name(tool: str) -> App | None:
    """An app named by a tool's prefix, e.g. 'gmail_send_message' or 'slack.post'."""
    tokens = _norm(tool).split("_")
    for n in (2, 1):
        if len(tokens) > n:
            app = _BY_ALIAS.get("_".join(tokens[:n]))
            if app is not None:
                return app
    return None


def split_app_list(text: str) -> tuple[list[App], list[str]]:
    """Split a connected-apps field ('Gmail; Google Drive | web-search slack') into known apps
    and unknown names. Separators are ; | , and whitespace; multi-word names ('Google Drive',
    'Web Search') are matched greedily, longest first."""
    known: list[App] = []
    unknown: list[str] = []
    for chunk in re.split(r"[;|,]+", text):
        words = chunk.split()
        i = 0
        while i < len(words):
            for j in range(min(len(words), i + 3), i, -1):
                app = lookup_app("_".join(words[i:j]))
                if app is not None:
                    if app not in known:
                        known.append(app)
                    i = j
                    break
            else:
                unknown.append(words[i])
                i += 1
    return known, unknown
