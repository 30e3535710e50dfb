"""The JSONC comment-stripping tokenizer."""

from __future__ import annotations

import pytest

from policy.jsonc import JsoncError, loads, strip_comments


def test_comments_and_trailing_commas() -> None:
    text = """// head
    {
      "a": 1, // one
      /* block
         comment */ "b": [1, 2, ],
      "c": {"d": true,},
    }"""
    assert loads(text) == {"a": 1, "b": [1, 2], "c": {"d": True}}


def test_comment_markers_inside_strings_are_kept() -> None:
    text = r'{"url": "https://x.test/a//b", "s": "/* not a comment */", "q": "say \"// hi\"", "e": "\\"}'
    assert loads(text) == {"url": "https://x.test/a//b", "s": "/* not a comment */", "q": 'say "// hi"', "e": "\\"}


def test_commas_inside_strings_before_brackets_are_kept() -> None:
    assert loads('["a,]", "b"]') == ["a,]", "b"]


def test_line_numbers_survive_block_comments() -> None:
    assert strip_comments("/* a\nb\n*/x").count("\n") == 2
    with pytest.raises(JsoncError, match="line 4"):
        loads('/* a\nb\n*/\n{"a": }')


@pytest.mark.parametrize("bad", ['{"a": "open', "/* never closed", "{,}"])
def test_malformed(bad: str) -> None:
    with pytest.raises(JsoncError):
        loads(bad)
