"""The OpenAPI document, true to the responses: every error is `application/problem+json`
(never FastAPI's default validation shape), and each operation lists the errors it can
answer. Checked by schemathesis in the test suite."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from api.errors import PROBLEM, TITLES

PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics"}


class ProblemError(BaseModel):
    loc: list[str | int] = Field(description='Where the problem is: `["body", "name"]`.')
    msg: str


class ProblemDetails(BaseModel):
    """An error (RFC 9457)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemError] | None = Field(None, description="On a 422: each problem, located.")
    correlation_id: str | None = Field(
        None, description="On a 500: the id the server's log line carries too."
    )


WHEN = {
    400: "The request cannot be read (a body that is not JSON, say).",
    401: "No API key, or an unknown or revoked one.",
    404: "No such resource (or another user's).",
    409: "The resource's state forbids it, or the write conflicts with another one.",
    413: "The request body is larger than the limit.",
    422: "Invalid input; `errors` locates each problem. Nothing was changed.",
    500: "A bug; the body carries a `correlation_id`.",
    503: "The database or Temporal cannot be reached; try again.",
}


def _errors_for(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    if path in PUBLIC_PATHS:
        return [500, 503]
    codes = [401, 422, 500, 503]
    if "requestBody" in operation:
        codes += [400, 413]
    if "{" in path:
        codes.append(404)
    if method != "get":
        codes.append(409)
    return sorted(codes)


def install_openapi(app: FastAPI) -> None:
    """Replace the app's document generator with one that documents problem responses."""

    def _openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        components["ProblemDetails"] = ProblemDetails.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for name, schema in components["ProblemDetails"].pop("$defs", {}).items():
            components[name] = schema
        problem = {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
        for path, operations in document.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                for code in _errors_for(path, method, operation):
                    responses[str(code)] = {
                        "description": f"{TITLES.get(code, 'Error')}. {WHEN[code]}",
                        "content": problem,
                    }
                security = operation.get("security")
                if security is None:
                    if path not in PUBLIC_PATHS:
                        operation["security"] = [{"bearer": []}]
                else:  # FastAPI names the scheme after its dependency (HTTPBearer): "bearer"
                    operation["security"] = [
                        {"bearer": []} if "HTTPBearer" in requirement else requirement
                        for requirement in security
                    ]
        metrics = document["paths"].get("/metrics", {}).get("get")
        if metrics:
            metrics["responses"]["200"] = {
                "description": "Prometheus text exposition format.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}
        }
        app.openapi_schema = document
        return document

    app.openapi = _openapi  # type: ignore[method-assign]
