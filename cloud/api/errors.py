"""Every error leaves the API as `{"error": ..., "detail": ...}` with a fitting status.

The OpenAPI document declares them too (`declare_error_responses`), per route, from what the
route is: every route may answer 400 (a NUL byte in the path or query) and 413 (a body over
`api.max_body_bytes`), both from the middleware in `cloud/api/limits.py`; a route that needs
a key 401, 403 and 429; a route with parameters or a body 422; a route with a path parameter
404. Statuses only some routes give (409, 502, 503, a 404 for a query parameter) are declared
on the route itself with `error_responses(...)`. A schemathesis run
(tests/cloud/test_api_conformance.py) fails on any status a route gives but does not declare.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


class ErrorOut(BaseModel):
    """The body of every error response."""

    error: str = Field(description="machine-readable reason, e.g. `unauthorized`, `not_found`")
    detail: str = Field(description="what was wrong, for a person")


ERROR_DESCRIPTIONS = {
    400: "malformed request (a NUL byte in the path or query, a bad Content-Length)",
    401: "no API key, an unknown key, or a missing, forged or expired session token",
    403: "the key's role, or its stores, do not allow this",
    404: "no such resource, or not one of the key's stores",
    409: "the resource is not in a state that allows this",
    413: "request body over `api.max_body_bytes` (refused before it is read)",
    422: "invalid parameters or body",
    429: "too many failed authentications from this client; see `Retry-After`",
    502: "the history server refused the query",
    503: "not ready, or the history server is unavailable",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, with the error body's schema."""
    return {
        status: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for dependency in dependant.dependencies:
        yield dependency
        yield from _dependencies(dependency)


def _statuses(route: APIRoute) -> list[int]:
    from cloud.api.auth import RoleRequirement

    statuses = [400, 413]
    every = [route.dependant, *_dependencies(route.dependant)]
    if any(isinstance(d.call, RoleRequirement) for d in every):
        statuses += [401, 403, 429]
    path_params = [p for d in every for p in d.path_params]
    other_params = [p for d in every for p in (*d.query_params, *d.header_params)]
    if path_params:
        statuses.append(404)
    if path_params or other_params or route.body_field is not None:
        statuses.append(422)
    return statuses


_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def _add_errors(routes: list[APIRoute], document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorOut", ErrorOut.model_json_schema())
    for route in routes:
        if not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status in _statuses(route):
                declared = responses.get(str(status))
                # FastAPI's own 422 describes its validation error, which this API never
                # sends (install_error_handlers turns it into the error body).
                if declared is None or "HTTPValidationError" in str(declared):
                    responses[str(status)] = {
                        "description": ERROR_DESCRIPTIONS[status],
                        "content": {"application/json": {"schema": _ERROR_REF}},
                    }
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in schemas and f'/{unused}"' not in json.dumps(document["paths"]):
            del schemas[unused]


def declare_error_responses(app: FastAPI, routers: Sequence[APIRouter] = ()) -> None:
    """Make the app's OpenAPI document declare the error statuses each route can give, with
    the error body (call it once all routes are added; a status a route declares itself is
    left as it is). `routers`: those included in the app (an app lists them as opaque
    entries, not as their routes)."""
    generate = app.openapi
    routes = [
        route
        for route in [*app.routes, *(r for router in routers for r in router.routes)]
        if isinstance(route, APIRoute)
    ]

    patched: list[dict[str, Any]] = []  # the document last patched (FastAPI caches it)

    def openapi() -> dict[str, Any]:
        document = generate()
        if not patched or patched[0] is not document:
            _add_errors(routes, document)
            patched[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, error, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for problem in exc.errors()[:5]:
            location = ".".join(str(p) for p in problem.get("loc", ()))
            parts.append(f"{location}: {problem.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(parts))
