"""Normalising what players type."""

from __future__ import annotations

import pytest

from taleforge.api.text import normalize_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  hello  ", "hello"),
        ("cafe\u0301", "caf\u00e9"),  # NFD -> NFC
        ("a\x00b\x07c\x1bd\x7fe", "abcde"),
        ("line one\r\nline two\n", "line one\nline two"),
        ("tab\tseparated", "tab separated"),
        ("\u0085next-line\u009f", "next-line"),  # C1 controls go too
        ("\n\n", ""),
        ("emoji \U0001f409 stays", "emoji \U0001f409 stays"),
    ],
)
def test_normalize_text(raw: str, clean: str) -> None:
    assert normalize_text(raw) == clean
