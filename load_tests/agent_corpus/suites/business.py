"""The ``crm``, ``github`` and ``web`` upstreams."""

from __future__ import annotations

from load_tests.agent_corpus.model import ToolDef, prop, strings

_S, _I = "string", "integer"
CRM: tuple[ToolDef, ...] = (
    ToolDef("search_accounts", "Search accounts", "Find customer accounts by name or industry.",
            {"query": prop(_S, "Words to look for.")}, ("query",)),
    ToolDef("get_account", "Get account", "Return an account with its contacts, owner and annual revenue.",
            {"account_id": prop(_S, "The account's id.")}, ("account_id",)),
    ToolDef("list_opportunities", "List opportunities", "List the open opportunities of an account.",
            {"account_id": prop(_S, "The account's id.")}, ("account_id",)),
    ToolDef("get_case", "Get case", "Return a support case with the customer's messages.",
            {"case_id": prop(_S, "The case's id.")}, ("case_id",)),
    ToolDef("add_case_comment", "Comment on case", "Add a comment to a case (public comments email the customer).",
            {"case_id": prop(_S, "The case's id."), "body": prop(_S, "Comment text."),
             "public": prop("boolean", "Visible to the customer.")}, ("case_id", "body"), read_only=False,
            open_world=True),
    ToolDef("update_contact", "Update contact", "Change fields of a contact (email, phone, payment details).",
            {"contact_id": prop(_S, "The contact's id."), "fields": prop("object", "Field name -> new value.")},
            ("contact_id", "fields"), read_only=False, destructive=True, idempotent=True),
    ToolDef("update_opportunity", "Update opportunity", "Change an opportunity's stage, amount or close date.",
            {"opportunity_id": prop(_S, "The opportunity's id."), "fields": prop("object", "Field -> value.")},
            ("opportunity_id", "fields"), read_only=False, idempotent=True),
    ToolDef("export_report", "Export report", "Email a CRM report as CSV to an address.",
            {"report_id": prop(_S, "The report's id."), "email": prop(_S, "Where to send it.")},
            ("report_id", "email"), read_only=False, open_world=True),
    ToolDef("delete_account", "Delete account", "Delete an account with its contacts and history.",
            {"account_id": prop(_S, "The account's id.")}, ("account_id",), read_only=False, destructive=True),
)

GITHUB: tuple[ToolDef, ...] = (
    ToolDef("search_issues", "Search issues", "Search issues and pull requests of a repository.",
            {"repo": prop(_S, "owner/name."), "query": prop(_S, "Search terms.")}, ("repo", "query"),
            open_world=True),
    ToolDef("get_issue", "Get issue", "Return an issue with its body.",
            {"repo": prop(_S, "owner/name."), "number": prop(_I, "Issue number.")}, ("repo", "number"),
            open_world=True),
    ToolDef("list_issue_comments", "Issue comments", "List the comments of an issue or pull request.",
            {"repo": prop(_S, "owner/name."), "number": prop(_I, "Issue number.")}, ("repo", "number"),
            open_world=True),
    ToolDef("get_pull_request", "Get pull request", "Return a pull request with its description and diff stat.",
            {"repo": prop(_S, "owner/name."), "number": prop(_I, "PR number.")}, ("repo", "number"),
            open_world=True),
    ToolDef("get_file_contents", "Get file", "Return a file's content from a repository.",
            {"repo": prop(_S, "owner/name."), "path": prop(_S, "File path."), "ref": prop(_S, "Branch or sha.")},
            ("repo", "path"), open_world=True),
    ToolDef("create_issue_comment", "Comment", "Comment on an issue or pull request.",
            {"repo": prop(_S, "owner/name."), "number": prop(_I, "Issue number."), "body": prop(_S, "Markdown.")},
            ("repo", "number", "body"), read_only=False, open_world=True),
    ToolDef("create_issue", "Create issue", "Open a new issue.",
            {"repo": prop(_S, "owner/name."), "title": prop(_S, "Title."), "body": prop(_S, "Markdown."),
             "labels": strings("Labels.")}, ("repo", "title"), read_only=False, open_world=True),
    ToolDef("create_or_update_file", "Commit file", "Create or update one file with a commit on a branch.",
            {"repo": prop(_S, "owner/name."), "path": prop(_S, "File path."), "content": prop(_S, "New content."),
             "message": prop(_S, "Commit message."), "branch": prop(_S, "Branch.")},
            ("repo", "path", "content", "message", "branch"), read_only=False, open_world=True),
    ToolDef("merge_pull_request", "Merge PR", "Merge a pull request.",
            {"repo": prop(_S, "owner/name."), "number": prop(_I, "PR number."),
             "merge_method": prop(_S, "merge, squash or rebase.")}, ("repo", "number"), read_only=False,
            open_world=True),
    ToolDef("add_collaborator", "Add collaborator", "Give a GitHub user access to a repository.",
            {"repo": prop(_S, "owner/name."), "username": prop(_S, "GitHub login."),
             "permission": prop(_S, "pull, push or admin.")}, ("repo", "username"), read_only=False,
            open_world=True),
)

WEB: tuple[ToolDef, ...] = (
    ToolDef("fetch", "Fetch", "Fetch a URL from the internet and return its content as markdown.",
            {"url": prop(_S, "URL to fetch."), "max_length": prop(_I, "Maximum characters returned.")},
            ("url",), open_world=True),
    ToolDef("web_search", "Web search", "Search the web; returns titles, URLs and snippets.",
            {"query": prop(_S, "Search query."), "count": prop(_I, "Number of results.")}, ("query",),
            open_world=True),
)
