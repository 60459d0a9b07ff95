"""Normalising what players type before it goes on the bus."""

from __future__ import annotations

import unicodedata

from taleforge.contracts.events import MAX_INPUT_CHARS

__all__ = ["MAX_INPUT_CHARS", "normalize_text"]


def normalize_text(text: str) -> str:
    """NFC, control characters removed (newline kept), surrounding whitespace stripped.

    Carriage returns go too, so "\\r\\n" becomes "\\n"; a tab becomes a space because it
    separates words. Lone surrogates (JSON can carry "\\ud800") go as well: they are not
    text and could not be encoded onto the bus.
    """
    text = text.replace("\t", " ")
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _DROPPED or ch == "\n")
    return unicodedata.normalize("NFC", text).strip()


_DROPPED = frozenset({"Cc", "Cs"})
