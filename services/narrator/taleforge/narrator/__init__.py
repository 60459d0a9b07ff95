"""Taleforge narrator: turns TurnRequested events into narration from an OpenAI-compatible API."""
