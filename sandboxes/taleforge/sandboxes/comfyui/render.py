"""Deterministic stand-in pictures: the same prompt, seed and size give the same PNG bytes."""

from __future__ import annotations

import hashlib
import io
import textwrap

from PIL import Image, ImageDraw, ImageFont


def _palette(prompt: str, seed: int) -> list[tuple[int, int, int]]:
    digest = hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()
    return [(digest[i], digest[i + 1], digest[i + 2]) for i in range(0, 30, 3)]


def render_scene(prompt: str, seed: int, width: int, height: int) -> Image.Image:
    """A vertical gradient and a few shapes coloured from sha256(prompt, seed), captioned."""
    colours = _palette(prompt, seed)
    top, bottom = colours[0], colours[1]
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(height - 1, 1)
        row = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (width, y)], fill=row)
    for i, colour in enumerate(colours[2:8]):
        cx = (colour[0] * 7 + i * 131) % width
        cy = (colour[1] * 5 + i * 89) % height
        r = max(4, min(width, height) // (4 + i))
        box = [cx - r, cy - r, cx + r, cy + r]
        if i % 2:
            draw.rectangle(box, outline=colour, width=max(1, r // 8))
        else:
            draw.ellipse(box, fill=colour)
    font = ImageFont.load_default()
    caption = "\n".join(textwrap.wrap(prompt, width=max(10, width // 7))[:6])
    draw.multiline_text((9, 9), caption, fill=(0, 0, 0), font=font)
    draw.multiline_text((8, 8), caption, fill=(255, 255, 255), font=font)
    return image


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()


def encode_preview(image: Image.Image, max_size: int = 256) -> bytes:
    """JPEG bytes of a shrunken copy, as ComfyUI sends for sampler previews."""
    preview = image.copy()
    preview.thumbnail((max_size, max_size))
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()
