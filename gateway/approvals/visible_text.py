"""Text shown to approvers, made unable to deceive them. Pure: no I/O.

Everything an approver reads about a held call (tool and upstream names, the principal, the
arguments) may have been written by a prompt-injected agent or a hostile upstream. Escaping stops
it from running as markup; this module stops it from *looking* like something else:

* Invisible characters are shown, not obeyed: bidirectional controls (U+202A-202E, U+2066-2069,
  U+200E/F, U+061C), zero-width characters (U+200B-200D, U+2060, U+FEFF), every other Unicode
  format character, line/paragraph separators, blank-looking letters, and control characters
  (C0, DEL, C1: ESC starts terminal escape sequences) become a visible ``⟨U+202E⟩`` marker.
* Host names with non-ASCII characters (in URLs, e-mail addresses, bare domains) are flagged
  with the ASCII form the network uses (``xn--...`` punycode), the scripts a label mixes (Latin
  with Cyrillic or Greek is the classic ``ex\u0430mple.com``) and the Latin name they look like.

:func:`pieces` splits a text into :class:`Plain`, :class:`Hidden` and :class:`HostFlag` parts;
:func:`to_html` renders them for the console (a Jinja filter) and :func:`to_terminal` for the CLI.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from encodings import idna
from typing import Literal

from markupsafe import Markup

HiddenKind = Literal["bidi", "zero-width", "format", "control"]

BIDI_CONTROLS = frozenset({0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)})
ZERO_WIDTH = frozenset({0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF})
# Letters and symbols that render as blank space although they are not whitespace.
BLANK_LOOKING = frozenset({0x115F, 0x1160, 0x180E, 0x2800, 0x3164, 0xFFA0})
_KEPT_CONTROLS = frozenset({"\n", "\t"})  # shown as layout where text is multi-line

# Label separators browsers accept besides '.' (IDNA maps them to '.').
_DOTS = ".\u3002\uff0e\uff61"
# Runs of word characters joined by dots, starting at a word boundary; possessive, so a long word
# is scanned once (linear time on attacker-sized arguments).
_HOST_RE = re.compile(rf"(?<![\w-])[\w-]++(?:[{_DOTS}][\w-]++)+")
_DOT_SPLIT = re.compile(f"[{_DOTS}]")
MAX_HOST = 253
_CANDIDATE_RE = re.compile(r"[^\x20-\x7e]")
_SCRIPT_WORDS = ("LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC", "GEORGIAN", "HEBREW",
                 "ARABIC", "DEVANAGARI", "THAI", "HIRAGANA", "KATAKANA", "HANGUL", "CJK")
# Cyrillic and Greek letters that look like Latin ones (lower case; host names are case-insensitive).
CONFUSABLE_WITH_LATIN = {  # written as escapes: the letters themselves would be the very trap
    "\u0430": "a", "\u0441": "c", "\u0501": "d", "\u0435": "e", "\u04bb": "h", "\u0456": "i", "\u0458": "j",
    "\u043a": "k", "\u04cf": "l", "\u043e": "o", "\u0440": "p", "\u051b": "q", "\u0455": "s", "\u0475": "v",
    "\u051d": "w", "\u0445": "x", "\u0443": "y", "\u04af": "y", "\u0451": "e", "\u0457": "i", "\u03b1": "a",
    "\u03b5": "e", "\u03b7": "n", "\u03b9": "i", "\u03ba": "k", "\u03bc": "u", "\u03bd": "v", "\u03bf": "o",
    "\u03c1": "p", "\u03c5": "u", "\u03c7": "x", "\u03b3": "y", "\u03c9": "w", "\u03f2": "c", "\u03f3": "j",
}


@dataclass(frozen=True, slots=True)
class Plain:
    """Text shown as it is (still escaped by the renderer)."""

    text: str


@dataclass(frozen=True, slots=True)
class Hidden:
    """A character that would act or vanish instead of showing: rendered as ``⟨U+XXXX⟩``."""

    char: str
    kind: HiddenKind

    @property
    def marker(self) -> str:
        return f"⟨U+{ord(self.char):04X}⟩"

    @property
    def name(self) -> str:
        return unicodedata.name(self.char, f"control character U+{ord(self.char):04X}")


@dataclass(frozen=True, slots=True)
class HostFlag:
    """A host name with non-ASCII characters, placed right after it: what it really is."""

    host: str
    ascii: str  # the punycode (xn--) form: what DNS resolves
    mixed: tuple[str, ...]  # the scripts mixed within one label, e.g. ('Cyrillic', 'Latin'); () if none
    looks_like: str | None  # the Latin host its look-alike letters spell, when that differs

    @property
    def label(self) -> str:
        """The flag's text, e.g. ``⟨xn--exmple-4nf.com · mixes Cyrillic+Latin · looks like example.com⟩``."""
        parts = [self.ascii]
        if self.mixed:
            parts.append("mixes " + "+".join(self.mixed))
        if self.looks_like:
            parts.append("looks like " + self.looks_like)
        return "⟨" + " · ".join(parts) + "⟩"


Piece = Plain | Hidden | HostFlag


def hidden_kind(char: str, *, multiline: bool = True) -> HiddenKind | None:
    """Why ``char`` must be shown as a marker, or None when it displays as itself."""
    code = ord(char)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return None if multiline and char in _KEPT_CONTROLS else "control"
    if code < 0xA0:
        return None  # printable ASCII: the common case, decided without a table lookup
    if code in BIDI_CONTROLS:
        return "bidi"
    if code in ZERO_WIDTH:
        return "zero-width"
    if code in BLANK_LOOKING or unicodedata.category(char) in ("Cf", "Zl", "Zp"):
        return "format"
    return None


def _script(char: str) -> str:
    words = unicodedata.name(char, "").split()
    for word in words:
        if word in _SCRIPT_WORDS:
            return word.title()
    return words[0].title() if words else "Unknown"


def _label_ascii(label: str) -> str:
    if label.isascii():
        return label.lower()
    try:
        return idna.ToASCII(label).decode("ascii").lower()  # nameprep, then punycode
    except UnicodeError:
        return "xn--" + label.lower().encode("punycode").decode("ascii")


def host_flag(host: str) -> HostFlag | None:
    """The flag for a host name, or None when it is plain ASCII (nothing to disguise)."""
    if host.isascii():
        return None
    labels = _DOT_SPLIT.split(host)
    mixed: set[str] = set()
    for label in labels:
        scripts = {_script(c) for c in label if c.isalpha()}
        if len(scripts) > 1:
            mixed |= scripts
    lowered = host.lower()
    skeleton = "".join(CONFUSABLE_WITH_LATIN.get(c, "." if c in _DOTS else c) for c in lowered)
    looks_like = skeleton if skeleton.isascii() and skeleton != lowered else None
    return HostFlag(host, ".".join(_label_ascii(label) for label in labels), tuple(sorted(mixed)), looks_like)


def _resolvable_tail(host: str) -> str:
    """The trailing whole labels that fit a real host name (253 characters): what DNS would resolve.

    Also bounds the work on a dotted run an attacker made huge.
    """
    if len(host) <= MAX_HOST:
        return host
    cut = len(host) - MAX_HOST
    dots = [m.end() for m in _DOT_SPLIT.finditer(host, cut - 1)]
    return host[dots[0]:] if dots else host[-MAX_HOST:]


def _plain_with_hosts(text: str) -> list[Piece]:
    if text.isascii():
        return [Plain(text)]  # an ASCII host has nothing to disguise
    out: list[Piece] = []
    start = 0
    for match in _HOST_RE.finditer(text):
        flag = host_flag(_resolvable_tail(match.group()))
        if flag is None:
            continue
        if match.end() > start:
            out.append(Plain(text[start:match.end()]))
        out.append(flag)
        start = match.end()
    if start < len(text):
        out.append(Plain(text[start:]))
    return out


def pieces(text: str, *, multiline: bool = True) -> list[Piece]:
    """``text`` split into what is shown as is, invisible characters, and flags after suspicious hosts.

    ``multiline`` keeps newlines and tabs as layout; without it they are markers too.
    """
    out: list[Piece] = []
    run_start = 0
    # Only characters outside printable ASCII can be hidden: visit those alone (arguments are mostly ASCII).
    for candidate in _CANDIDATE_RE.finditer(text):
        i, char = candidate.start(), candidate.group()
        kind = hidden_kind(char, multiline=multiline)
        if kind is None:
            continue
        if i > run_start:
            out.extend(_plain_with_hosts(text[run_start:i]))
        out.append(Hidden(char, kind))
        run_start = i + 1
    if run_start < len(text):
        out.extend(_plain_with_hosts(text[run_start:]))
    return out


def to_html(value: object, *, multiline: bool = False) -> Markup:
    """Escaped HTML with markers and host flags as styled spans: the console's ``visible`` filter.

    Single-line by default (names, ids): a newline is a marker too. ``multiline`` keeps newlines
    and tabs as layout, for the pretty-printed arguments in a ``<pre>``.
    """
    text = "" if value is None else str(value)
    parts: list[str] = []
    for piece in pieces(text, multiline=multiline):
        if isinstance(piece, Plain):
            parts.append(html.escape(piece.text, quote=False))
        elif isinstance(piece, Hidden):
            parts.append(f'<span class="vt-hidden vt-{piece.kind}" data-vt="hidden" '
                         f'title="{html.escape(piece.name)}">{piece.marker}</span>')
        else:
            parts.append(f' <span class="vt-host" data-vt="host" title="{html.escape(piece.ascii)}">'
                         f'{html.escape(piece.label, quote=False)}</span>')
    return Markup("".join(parts))  # every piece of input text was escaped above


def to_plain(value: object, *, multiline: bool = True) -> str:
    """The same rendering as plain text (markers and flags inline), for places markup cannot go."""
    text = "" if value is None else str(value)
    out: list[str] = []
    for piece in pieces(text, multiline=multiline):
        if isinstance(piece, Plain):
            out.append(piece.text)
        elif isinstance(piece, Hidden):
            out.append(piece.marker)
        else:
            out.append(" " + piece.label)
    return "".join(out)


def to_terminal(value: object, *, multiline: bool = False) -> str:
    """Text safe to print to a terminal: no escape sequences, no bidi tricks, suspicious hosts flagged.

    Single-line by default (a table cell or a field), so a newline cannot forge another row.
    """
    return to_plain(value, multiline=multiline)


__all__ = ["BIDI_CONTROLS", "CONFUSABLE_WITH_LATIN", "ZERO_WIDTH", "Hidden", "HostFlag", "Piece", "Plain",
           "hidden_kind", "host_flag", "pieces", "to_html", "to_plain", "to_terminal"]
