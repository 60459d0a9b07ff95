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
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

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


_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}


class ProblemError(Exception):
    """Raise to answer with a problem that carries more than `detail` (e.g. `turn_id`)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extra = extra


async def _problem_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem(
        exc.status, exc.detail, slug=_SLUGS.get(exc.status), headers=exc.headers, **exc.extra
    )


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the field inside `location`.")
    location: str = Field(description="body, query, path or header.")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error response."""

    type: str = Field(description="A URI naming the kind of problem (or about:blank).")
    title: str = Field(description="The HTTP status phrase.")
    status: int
    detail: str = Field(description="What went wrong, readable by a person.")
    field: str | None = Field(None, description="For 422: the (first) offending field.")
    errors: list[FieldError] | None = Field(
        None, description="For 422 (and 400): each offending field and what is wrong with it."
    )
    model_config = ConfigDict(extra="allow")


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
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return problem(exc.status_code, detail, slug=_SLUGS.get(exc.status_code), headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method of the path, not only those of the first route Starlette tried (each
    FastAPI operation is its own route)."""
    methods: set[str] = set()
    for route in request.app.routes:
        route_methods = getattr(route, "methods", None) or set()
        for method in route_methods:
            match, _ = route.matches({**request.scope, "method": method})
            if match is Match.FULL:
                methods |= set(route_methods)
                break
    return ", ".join(sorted(methods))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc.errors())
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problem(
        422,
        summary or "the request is invalid",
        slug="invalid-request",
        field=errors[0]["field"] if errors else None,
        errors=errors,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "an unexpected error happened; it has been logged", slug="internal")


def install_problem_handlers(
    app: FastAPI, unavailable: dict[type[Exception], str] | None = None
) -> None:
    """Register the handlers; `unavailable` maps dependency errors to a 503 detail."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for exc_type, detail in (unavailable or {}).items():
        app.add_exception_handler(exc_type, _unavailable_as(detail))
    app.add_exception_handler(Exception, _unexpected)
    document_problems(app)


def _unavailable_as(detail: str) -> Any:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: %s (%r)", request.method, request.url.path, detail, exc)
        return problem(503, detail, slug="service-unavailable", headers={"Retry-After": "2"})

    return handler


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_COMMON = {
    "400": "Bad request (e.g. a Last-Event-ID this API did not write)",
    "401": "Missing or unacceptable access token",
    "413": "Request body too large",
    "422": "Invalid or malformed request: `field`/`errors` name the offending fields",
    "429": "Too many requests, or today's budget is used up (see Retry-After)",
    "503": "A dependency (NATS, Postgres, the auth server's keys) is unavailable",
}


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what errors really look like: every 4xx/5xx response
    is a `Problem` (application/problem+json), and every operation lists the common ones
    (FastAPI's own 422 schema is not what this API sends)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for name, sub in components["Problem"].pop("$defs", {}).items():
            components.setdefault(name, sub)
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict) and "responses" in operation:
                    _problem_responses(operation)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problem_responses(operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    for code, description in _COMMON.items():
        responses.setdefault(code, {"description": description})
    for code, response in responses.items():
        if code.isdigit() and int(code) >= 400:
            response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}
            if not response.get("description") or response["description"] == "Validation Error":
                response["description"] = _COMMON.get(code, HTTPStatus(int(code)).phrase)
