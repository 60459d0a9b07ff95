"""Reading the text out of Responses and Chat Completions request bodies."""

from __future__ import annotations

from typing import Any


def _content_text(content: Any) -> str:
    """Text of a message's content: a string, or a list of parts with `text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if isinstance(part, dict)]
        return "\n".join(t for t in texts if isinstance(t, str) and t)
    return ""


def _messages(items: Any) -> list[tuple[str, str]]:
    """(role, text) for every message-like item of a Responses `input` or Chat `messages`."""
    if isinstance(items, str):
        return [("user", items)]
    if not isinstance(items, list):
        return []
    found = []
    for item in items:
        if isinstance(item, dict) and "content" in item:
            found.append((str(item.get("role", "user")), _content_text(item["content"])))
    return found


def last_user_text(items: Any) -> str:
    """What the sandbox's reply is derived from: the last user message's text."""
    for role, text in reversed(_messages(items)):
        if role == "user":
            return text
    return ""


def all_text(items: Any) -> list[str]:
    return [text for _, text in _messages(items)]
