"""FastAPI dependencies: the service object and the API-token check."""

from __future__ import annotations

import hmac

from fastapi import Header, Request

from cxrtriage.serve.service import ApiError, StudyService

__all__ = ["get_service", "require_token", "token_ok"]


def get_service(request: Request) -> StudyService:
    """The app's :class:`StudyService` (created at start-up)."""
    return request.app.state.service


def token_ok(service: StudyService, token: str | None) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    want = service.settings.api_token or ""
    if not token or not want:
        return False
    return hmac.compare_digest(token.encode(), want.encode())


def require_token(
    request: Request,
    x_api_token: str | None = Header(None, description="API token for write endpoints"),
    authorization: str | None = Header(None, description="alternatively 'Bearer <token>'"),
) -> None:
    """Dependency of write endpoints: 401 unless the right token is sent."""
    token = x_api_token
    if not token and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    if not token_ok(get_service(request), token):
        raise ApiError(
            401,
            "unauthorized",
            "write endpoint: send the API token in the X-API-Token header (see cxr serve --api-token)",
        )
