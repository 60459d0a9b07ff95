"""Normalising what players type before it goes on the bus."""

from __future__ import annotations

import unicodedata

from taleforge.contracts.events import MAX_INPUT_CHARS

__all__ = ["MAX_INPUT_CHARS", "normalize_text"]


def normalize_text(text: str) -> str:
    """NFC, control characters removed (newline kept), surrounding whitespace stripped.

    Carriage returns go too, so "\\r\\n" becomes "\\n"; a tab becomes a space because it
    separates words.
    """
    text = unicodedata.normalize("NFC", text).replace("\t", " ")
    kept = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) != "Cc")
    return kept.strip()
