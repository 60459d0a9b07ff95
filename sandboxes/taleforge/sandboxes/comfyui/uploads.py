"""`POST /upload/image`: ComfyUI's input-image upload, parsed without extra dependencies."""

from __future__ import annotations

import email.parser
import email.policy
import re
from dataclasses import dataclass
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9._ ()\-]")


@dataclass(frozen=True)
class FormData:
    fields: dict[str, str]
    files: dict[str, tuple[str, bytes]]  # field -> (filename, bytes)


def parse_form(content_type: str, body: bytes) -> FormData:
    """multipart/form-data via the stdlib MIME parser (what a browser or httpx sends)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    if not message.is_multipart():
        return FormData(fields, files)
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return FormData(fields, files)


def store_upload(
    inputs: dict[str, bytes], choices: list[str], form: FormData
) -> tuple[int, dict[str, Any]]:
    """Keep the image like ComfyUI does (`overwrite`, `subfolder`, rename on clash)."""
    if "image" not in form.files:
        return 400, {"error": "no image"}
    filename, data = form.files["image"]
    filename = _SAFE.sub("_", filename.rsplit("/", 1)[-1]) or "upload.png"
    subfolder = form.fields.get("subfolder", "").strip("/")
    if ".." in subfolder:
        return 400, {"error": "bad subfolder"}
    overwrite = form.fields.get("overwrite", "").lower() in ("true", "1")
    kind = form.fields.get("type", "input") or "input"

    def full(name: str) -> str:
        return f"{subfolder}/{name}" if subfolder else name

    stem, dot, ext = filename.rpartition(".")
    stem, ext = (stem, f".{ext}") if dot else (filename, "")
    number = 1
    while full(filename) in inputs and not overwrite and inputs[full(filename)] != data:
        filename = f"{stem} ({number}){ext}"
        number += 1
    inputs[full(filename)] = data
    if full(filename) not in choices:
        choices.append(full(filename))  # LoadImage accepts it from now on, like ComfyUI
    return 200, {"name": filename, "subfolder": subfolder, "type": kind}
