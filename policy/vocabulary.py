"""The words name heuristics read in a tool's name: write verbs by class, read verbs, web verbs,
and noun families (what a read of that kind of object touches, what a write to it is).

Data only; `policy.classify` applies it. Kept apart so the lists can grow without the rules
that use them getting lost among them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from policy.models import Leg

P, U, E = Leg.P, Leg.U, Leg.E


def words(text: str) -> frozenset[str]:
    """A frozenset of the whitespace-separated words of `text`."""
    return frozenset(text.split())


_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


@lru_cache(maxsize=4096)
def name_words(name: str) -> tuple[str, ...]:
    """`tokens` as a tuple, cached: argument names ('query', 'record_id') repeat across tools."""
    return tuple(t for t in _SEPARATORS.split(_CAMEL.sub(r"\1 \2", name).lower()) if t)


def tokens(name: str) -> list[str]:
    """Split a tool or argument name into lower-case words: 'sendEmail', 'send_email', 'send-email.v2'."""
    return list(name_words(name))


# Write verb classes. A name with any write verb is a write: it is not provably read-only.
WRITE_CLASSES: dict[str, frozenset[str]] = {
    "send": words("send reply forward post publish notify share dm invite email message broadcast tweet respond"),
    "push": words("push merge release tag deploy commit rebase"),
    "pay": words("pay transfer charge refund payout wire purchase buy withdraw deposit"),
    "delete": words("delete remove drop destroy purge wipe erase trash revoke terminate kill truncate unlink rm"),
    "bulk": words("bulk batch import sync"),
    "comment": words("comment annotate"),
    "create": words("create add insert new upload put write draft book schedule fork copy clone make reserve"),
    "update": words(
        "update edit modify patch set upsert rename move change assign label mark archive close approve reject "
        "grant start stop restart run exec execute invoke trigger submit install uninstall enable disable apply "
        "save replace resolve complete star unstar subscribe unsubscribe lock unlock reset append cancel "
        "reschedule accept decline rsvp join leave"
    ),
}
VERB_CLASS: dict[str, str] = {verb: cls for cls, verbs in WRITE_CLASSES.items() for verb in verbs}
READ_VERBS = words(
    "get list search read fetch find query lookup look describe show view retrieve browse download count "
    "check inspect peek summarize export watch poll scan navigate load extract stat tail cat grep ls "
    "whoami ping status info preview render visit"
)
# Words that are verbs or nouns ('post_to_chat' vs 'get_post'): in a name's first clause, a write
# only when no read verb comes before them.
AMBIGUOUS = words(
    "email message dm invite tag release commit comment draft charge transfer refund wire book label star post "
    "lock reset new copy share run start stop close archive patch change mark set move schedule deposit payout "
    "import sync batch bulk"
)
# Words that join two actions in one name ('lookup_and_email_customer', 'search_then_post'): the
# word after one is a verb position again.
CONJUNCTIONS = words("and then or plus also")
# Verbs that open a web page only with a web noun or URL argument ('open_url'; 'open_issue' is not
# one), and verbs that are fetches by themselves ('browse', 'scrape').
WEB_VERBS = words("open goto")
FETCH_VERBS = words("browse navigate visit crawl scrape curl wget")
# Nouns of web pages and URLs: a read of one is a fetch (U+E: the URL itself leaves the organisation).
# Not 'page' or 'site' alone: Notion and Confluence pages and SharePoint sites are documents
# ('get_page(page_id)'); a page read with a URL argument is a fetch by its argument.
WEB_NOUNS = words("url urls uri uris web website websites webpage webpages http https internet browser html")
# Nouns that make any write a payment (`financial_transaction_any`): 'send_money', 'schedule_transaction'.
PAYMENT_NOUNS = words(
    "money payment payments iban transfer transfers transaction transactions payout payouts funds fund wire "
    "bill bills invoice invoices remittance"
)


@dataclass(frozen=True)
class NounFamily:
    """A kind of object a tool name may mention, what reading it touches, and its write categories."""

    name: str
    nouns: frozenset[str]
    read_legs: frozenset[Leg]
    categories: dict[str, str] = field(default_factory=dict)  # write verb class -> category


_CHAT = "slack_post_to_channel_or_external_dm"
_CALENDAR = "calendar_invite_external"
_CRM = "salesforce_record_create_update_delete"

# Why these read legs: private conversations, mail, files and calendars are private (P) and
# written by others (U); transactions and statements are private and their subjects are written
# by the counterparty (U); a balance, an account, a CRM record, a user's profile or bookings are
# private but written by us, while notes, support cases and tickets hold what customers wrote
# (U); reviews and listings of hotels, restaurants and flights are public text by others (U).
NOUN_FAMILIES: tuple[NounFamily, ...] = (
    NounFamily(
        "transactions",
        words(
            "transaction transactions statement statements payment payments invoice invoices payout payouts "
            "transfer transfers refund refunds charge charges"
        ),
        frozenset({P, U}),
    ),
    NounFamily("balance", words("balance balances account accounts iban wallet wallets card cards"), frozenset({P})),
    NounFamily(
        "chat",
        words("chat chats channel channels slack dm dms direct teams conversation conversations"),
        frozenset({P, U}),
        dict.fromkeys(("send", "create"), _CHAT),
    ),
    NounFamily(
        "mail",
        words("email emails mail mails inbox message messages thread threads gmail outlook attachment attachments"),
        frozenset({P, U}),
        {"send": "email_send", "create": "email_draft"},
    ),
    NounFamily(
        "calendar",
        words(
            "calendar calendars event events meeting meetings invite invitation invitations appointment appointments"
        ),
        frozenset({P, U}),
        dict.fromkeys(("send", "create"), _CALENDAR),
    ),
    NounFamily(
        "crm",
        words("crm salesforce lead leads opportunity opportunities contact contacts customer customers deal deals"),
        frozenset({P}),
        dict.fromkeys(("create", "update", "delete", "bulk"), _CRM),
    ),
    NounFamily("notes", words("note notes case cases ticket tickets"), frozenset({P, U})),
    NounFamily(
        "personal",
        words("user users profile profiles booking bookings reservation reservations itinerary itineraries"),
        frozenset({P}),
    ),
    NounFamily(
        "code",
        words("repo repos repository repositories branch branches commit commits release releases github gitlab"),
        frozenset({P}),
        {"push": "github_push_merge_release", "delete": "github_push_merge_release"},
    ),
    NounFamily(
        "code_discussion",
        words("issue issues pr prs pull pulls comment comments discussion discussions"),
        frozenset({P, U}),
        {"push": "github_push_merge_release"},
    ),
    NounFamily(
        "files",
        words(
            "drive file files doc docs document documents folder folders sharepoint onedrive sheet sheets "
            "spreadsheet spreadsheets page pages site sites wiki"
        ),
        frozenset({P, U}),
        {
            "delete": "sharepoint_drive_bulk_write_or_delete",
            "bulk": "sharepoint_drive_bulk_write_or_delete",
            "send": "drive_share_external",
        },
    ),
    NounFamily(
        "travel",
        words(
            "hotel hotels restaurant restaurants flight flights rental rentals car cars review reviews rating "
            "ratings airline airlines"
        ),
        frozenset({U}),
    ),
)
