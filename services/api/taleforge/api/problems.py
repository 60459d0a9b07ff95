"""Every error as RFC 9457 problem JSON: `type`, `title`, `status`, `detail` (+ `errors`).

Clients get one shape for everything that goes wrong, and never a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://taleforge.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        # RFC 9457: "about:blank" means the title is just the HTTP status phrase.
        "type": PROBLEM_TYPE_BASE + slug if slug else "about:blank",
        "title": phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


_SLUGS = {401: "unauthorized", 404: "not-found", 405: "method-not-allowed"}


def _field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    # Leave out pydantic's `input` and `ctx`: they echo what was sent (maybe 1 MB of it).
    out = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ())]
        location = loc[0] if loc else "body"
        field = ".".join(loc[1:]) if len(loc) > 1 else location
        out.append({"field": field, "location": location, "message": str(err.get("msg", ""))})
    return out


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem(exc.status_code, detail, slug=_SLUGS.get(exc.status_code), headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc.errors())
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problem(422, summary or "the request is invalid", slug="invalid-request", errors=errors)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "an unexpected error happened; it has been logged", slug="internal")


def install_problem_handlers(
    app: FastAPI, unavailable: dict[type[Exception], str] | None = None
) -> None:
    """Register the handlers; `unavailable` maps dependency errors to a 503 detail."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for exc_type, detail in (unavailable or {}).items():
        app.add_exception_handler(exc_type, _unavailable_as(detail))
    app.add_exception_handler(Exception, _unexpected)


def _unavailable_as(detail: str) -> Any:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: %s (%r)", request.method, request.url.path, detail, exc)
        return problem(503, detail, slug="service-unavailable", headers={"Retry-After": "2"})

    return handler
