"""Counting prompt tokens, to fit a prompt into its budget.

tiktoken downloads its BPE files on first use, which fails on a machine without internet.
So the default is `ApproxTokenCounter`: one token per word-like run of up to four
characters and per punctuation mark, which tracks o200k/cl100k counts of English prose
within about ±15 %. `NARRATOR_TOKENIZER=tiktoken:<encoding>` uses tiktoken when its files
are available (internet, or `TIKTOKEN_CACHE_DIR` holding them); if they are not, the
narrator logs it and falls back to the approximation.
"""

from __future__ import annotations

import logging
import re
from typing import Protocol

log = logging.getLogger(__name__)

# Per-message framing the chat formats add (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 4

_PIECES = re.compile(r"[A-Za-z]{1,4}|\d{1,3}|[^\sA-Za-z\d]")


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class ApproxTokenCounter:
    name = "approx"

    def count(self, text: str) -> int:
        return len(_PIECES.findall(text))


class TiktokenCounter:
    def __init__(self, encoding: str) -> None:
        import tiktoken

        self._encoding = tiktoken.get_encoding(encoding)
        self.name = f"tiktoken:{encoding}"

    def count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))


def make_counter(spec: str) -> TokenCounter:
    """`approx`, or `tiktoken:<encoding>` (falls back to approx when its files are missing)."""
    if spec.startswith("tiktoken:"):
        encoding = spec.split(":", 1)[1] or "o200k_base"
        try:
            return TiktokenCounter(encoding)
        except Exception as exc:  # no network and no cached BPE file: keep working
            log.warning(
                "tiktoken %s unavailable (%s); counting tokens approximately", encoding, exc
            )
    return ApproxTokenCounter()


def count_messages(counter: TokenCounter, instructions: str, messages: list[dict[str, str]]) -> int:
    total = counter.count(instructions) + MESSAGE_OVERHEAD_TOKENS
    for message in messages:
        total += counter.count(message["content"]) + MESSAGE_OVERHEAD_TOKENS
    return total
