"""gateway/approvals/visible_text.py: invisible characters shown, look-alike hosts flagged (pure)."""

from __future__ import annotations

import pytest

from gateway.approvals.visible_text import Hidden, HostFlag, Plain, host_flag, pieces, to_html, to_terminal

CYRILLIC_A = "\u0430"
RLO = "\u202e"


@pytest.mark.parametrize("code", [0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069,
                                  0x200E, 0x200F, 0x061C])
def test_every_bidi_control_is_a_marker(code: int) -> None:
    assert pieces(f"a{chr(code)}b") == [Plain("a"), Hidden(chr(code), "bidi"), Plain("b")]
    assert to_terminal(f"a{chr(code)}b") == f"a⟨U+{code:04X}⟩b"


@pytest.mark.parametrize("code", [0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF])
def test_every_zero_width_character_is_a_marker(code: int) -> None:
    assert pieces(f"a{chr(code)}b") == [Plain("a"), Hidden(chr(code), "zero-width"), Plain("b")]


def test_other_format_and_blank_looking_characters_are_markers() -> None:
    assert [p.kind for p in pieces("\u00ad\u2028\u3164\U000e0041") if isinstance(p, Hidden)] == [
        "format", "format", "format", "format"]


def test_control_characters_c0_esc_del_c1() -> None:
    text = "ok\x1b[31mred\x07\x7f\x9b2J\r"
    assert to_terminal(text) == "ok⟨U+001B⟩[31mred⟨U+0007⟩⟨U+007F⟩⟨U+009B⟩2J⟨U+000D⟩"
    # A newline forges a table row on one line; kept as layout only where text is multi-line.
    assert to_terminal("a\nb") == "a⟨U+000A⟩b"
    assert to_terminal("a\n\tb", multiline=True) == "a\n\tb"


def test_plain_text_is_untouched() -> None:
    for text in ("", "hello world", "bücher und straße", "日本語のテキスト", "3.14 and www.example.com", "a_b.c_d"):
        assert to_terminal(text) == text


def test_mixed_script_host_is_flagged_with_punycode() -> None:
    host = f"ex{CYRILLIC_A}mple.com"
    assert host_flag(host) == HostFlag(host, "xn--exmple-4nf.com", ("Cyrillic", "Latin"), "example.com")
    out = pieces(f"mail bob@{host} now")
    assert out == [Plain(f"mail bob@{host}"), HostFlag(host, "xn--exmple-4nf.com", ("Cyrillic", "Latin"),
                                                       "example.com"), Plain(" now")]
    assert to_terminal(f"https://{host}/login") == (
        f"https://{host} ⟨xn--exmple-4nf.com · mixes Cyrillic+Latin · looks like example.com⟩/login")


def test_greek_latin_mix_and_whole_script_look_alikes() -> None:
    greek_o = "\u03bf"
    flag = host_flag(f"g{greek_o}{greek_o}gle.com")
    assert flag is not None and flag.mixed == ("Greek", "Latin") and flag.looks_like == "google.com"
    all_cyrillic = "\u0440\u0430\u0443\u0440\u0430\u04cf.com"  # every letter Cyrillic: no mix, still a look-alike
    flag = host_flag(all_cyrillic)
    assert flag is not None and flag.mixed == () and flag.looks_like == "paypal.com"
    assert flag.ascii.startswith("xn--") and flag.ascii.endswith(".com")


def test_legitimate_idn_is_shown_with_its_punycode_only() -> None:
    assert host_flag("bücher.de") == HostFlag("bücher.de", "xn--bcher-kva.de", (), None)
    assert host_flag("example.com") is None


def test_fullwidth_dots_and_letters_are_flagged_with_what_they_resolve_to() -> None:
    flag = host_flag("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\u3002com")  # fullwidth "example" + ideographic dot
    assert flag is not None and flag.ascii == "example.com"


def test_html_escapes_and_styles_markers_and_flags() -> None:
    host = f"ex{CYRILLIC_A}mple.com"
    html = str(to_html(f"<b>pay{RLO}liam.com</b> {host}"))
    assert RLO not in html and "<b>" not in html
    assert html == (
        "&lt;b&gt;pay<span class=\"vt-hidden vt-bidi\" data-vt=\"hidden\" title=\"RIGHT-TO-LEFT OVERRIDE\">"
        "⟨U+202E⟩</span>liam.com&lt;/b&gt; " + host + " <span class=\"vt-host\" data-vt=\"host\" "
        "title=\"xn--exmple-4nf.com\">⟨xn--exmple-4nf.com · mixes Cyrillic+Latin · looks like example.com⟩</span>")
    assert str(to_html(None)) == ""


def test_large_ascii_arguments_stay_cheap_and_exact() -> None:
    text = '{"body": "' + "x" * 200_000 + '"}'
    assert to_terminal(text) == text


def test_a_huge_dotted_run_is_flagged_by_its_resolvable_tail() -> None:
    host = f"ex{CYRILLIC_A}mple.com"
    out = to_terminal("a." * 50_000 + host)
    # The flag covers the last 253 characters of whole labels (121 "a." labels and the host): a real host name.
    assert out.endswith(f"a.{host} ⟨" + "a." * 121 + "xn--exmple-4nf.com · mixes Cyrillic+Latin · looks like "
                        + "a." * 121 + "example.com⟩")
