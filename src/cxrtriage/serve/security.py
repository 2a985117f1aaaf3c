"""Authentication, authorisation, audit and browser hardening of the server.

* **Who**: users of the study store (:mod:`cxrtriage.store.users`, Argon2id
  password hashes, roles ``uploader`` and ``radiologist``), managed with
  ``cxr users add|list|remove``.
* **How they prove it**: a signed session cookie after ``POST /login``
  (Starlette's ``SessionMiddleware``, signed with ``itsdangerous``) for the
  pages and the page's own API calls, or HTTP Basic credentials on each API
  request (FastAPI's :class:`fastapi.security.HTTPBasic`) for scripts. A
  successful Basic check is remembered for :data:`BASIC_CACHE_SECONDS` under
  an HMAC of the password, so scripts do not pay one Argon2 verification
  (about 64 MiB and 50 ms) per request.
* **Phone uploads**: the QR code on the upload page carries a short-lived
  signed link (``itsdangerous.URLSafeTimedSerializer``) that opens an
  *upload-only* session for the user who showed the page: it can upload and
  read back the studies uploaded in that session, nothing else.
* **What they may do**: every study read (API, pictures, reports, pages, the
  recent-studies list) needs a full session or Basic credentials; only
  radiologists sign reports off. Each read, upload, sign-off and login is
  written to the ``audit_log`` table.
* **Browser hardening**: :class:`SecurityHeadersMiddleware` (CSP,
  ``X-Content-Type-Options``, ``X-Frame-Options``, ``Referrer-Policy``) and an
  Origin check on cookie-authenticated POSTs (:class:`OriginCheckMiddleware`;
  the session cookie is also ``SameSite=Lax``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cxrtriage.serve.deps import get_service
from cxrtriage.serve.schemas import SignOffIn
from cxrtriage.serve.service import ApiError, StudyService
from cxrtriage.serve.settings import INITIAL_PASSWORD_ENV, INITIAL_USER_ENV
from cxrtriage.store import Study, StudyStore, UserError

__all__ = [
    "AnonymousUploadGuard",
    "BASIC_CACHE_SECONDS",
    "SESSION_COOKIE",
    "LoginRequired",
    "OriginCheckMiddleware",
    "Principal",
    "RateLimiter",
    "check_login_allowed",
    "login_key",
    "check_upload_quota",
    "SecurityHeadersMiddleware",
    "UploadLinks",
    "audit",
    "authorize_study",
    "ensure_initial_user",
    "optional_principal",
    "remember_upload",
    "require_principal",
    "require_radiologist",
    "require_uploader",
    "safe_next",
    "send_json_error",
    "signer_name",
]

log = logging.getLogger(__name__)

#: Name of the signed session cookie.
SESSION_COOKIE = "cxrtriage_session"

#: How long a verified HTTP Basic password is remembered (HMAC of it, in memory), seconds.
BASIC_CACHE_SECONDS = 300.0

#: Studies an upload-only (phone) session may read back: the last this many it uploaded.
MAX_SESSION_STUDIES = 20

_UPLOAD_LINK_SALT = "cxrtriage.upload-link.v1"

_basic = HTTPBasic(auto_error=False, description="user name and password (cxr users add)")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller.

    Attributes
    ----------
    username : str
    role : {"uploader", "radiologist"}
    scope : {"full", "upload"}
        ``upload``: a phone session opened by a QR upload link (upload and read back its own studies only).
    via : {"session", "basic"}
    """

    username: str
    role: str
    scope: str = "full"
    via: str = "session"

    @property
    def can_sign(self) -> bool:
        """Radiologist with a full session or Basic credentials."""
        return self.role == "radiologist" and self.scope == "full"


class LoginRequired(Exception):
    """A page needs a login: answered with a redirect to ``/login?next=...``."""

    def __init__(self, next_path: str):
        super().__init__(next_path)
        self.next_path = next_path


def safe_next(value: str | None) -> str:
    """A local path to go to after login: ``value`` if it is a same-site absolute path, else ``"/"``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 300:
        return "/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/"


class UploadLinks:
    """Short-lived signed upload links for the QR code.

    Parameters
    ----------
    secret : str
        Signing key (:meth:`cxrtriage.serve.settings.ServeSettings.signing_key`).
    max_age_s : float
        Validity of a link, seconds.
    """

    def __init__(self, secret: str, max_age_s: float):
        self._s = URLSafeTimedSerializer(secret, salt=_UPLOAD_LINK_SALT)
        self.max_age_s = max_age_s

    def make(self, username: str) -> str:
        """A URL-safe token naming ``username`` and the current time (signed, not encrypted)."""
        return str(self._s.dumps({"u": username}))

    def verify(self, token: str) -> str:
        """The user name in a valid, unexpired token.

        Raises
        ------
        ApiError
            403 ``upload_link_expired`` or ``upload_link_invalid``.
        """
        if len(token) > 500:
            raise ApiError(403, "upload_link_invalid", "upload link is not valid")
        try:
            data = self._s.loads(token, max_age=max(1, round(self.max_age_s)))
        except SignatureExpired:
            raise ApiError(
                403,
                "upload_link_expired",
                f"upload link expired (valid {self.max_age_s / 60:g} min); scan the QR code on the upload page again",
            ) from None
        except BadSignature:
            raise ApiError(403, "upload_link_invalid", "upload link is not valid") from None
        user = data.get("u") if isinstance(data, dict) else None
        if not isinstance(user, str):
            raise ApiError(403, "upload_link_invalid", "upload link is not valid")
        return user


class RateLimiter:
    """Events per key in a sliding time window, in memory (one process).

    Parameters
    ----------
    limit : int
        Events allowed per key within ``window_s``; 0 or less: unlimited.
    window_s : float
        Window length, seconds.
    """

    def __init__(self, limit: int, window_s: float):
        self.limit, self.window_s = limit, window_s
        self._events: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        ev = [t for t in self._events.get(key, []) if t > now - self.window_s]
        if ev:
            self._events[key] = ev
        else:
            self._events.pop(key, None)
        return ev

    def blocked_for(self, key: str) -> float:
        """Seconds until ``key`` may act again (0.0: not blocked)."""
        if self.limit <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            ev = self._recent(key, now)
            return max(0.0, ev[0] + self.window_s - now) if len(ev) >= self.limit else 0.0

    def add(self, key: str) -> None:
        """Record one event of ``key``."""
        if self.limit <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._events) > 10_000:  # bound the memory: drop keys with no recent event
                for k in list(self._events):
                    self._recent(k, now)
            ev = self._recent(key, now)
            ev.append(now)
            self._events[key] = ev

    def reset(self, key: str) -> None:
        """Forget ``key``'s events (after a successful login)."""
        with self._lock:
            self._events.pop(key, None)


#: Failed logins allowed per user name within :data:`LOGIN_WINDOW_S` before 429.
MAX_FAILED_LOGINS = 10
LOGIN_WINDOW_S = 900.0


def login_throttle(request: Request) -> RateLimiter:
    """The app's limiter of failed logins (per user name)."""
    lim = getattr(request.app.state, "login_throttle", None)
    if lim is None:
        lim = request.app.state.login_throttle = RateLimiter(MAX_FAILED_LOGINS, LOGIN_WINDOW_S)
    return lim


def login_key(request: Request, username: str) -> str:
    """Key of the failed-login counter: user name and client address (so a stranger cannot lock a user out
    everywhere)."""
    host = request.client.host if request.client else "?"
    return f"{username.lower()[:64]}|{host}"


def check_login_allowed(request: Request, username: str) -> None:
    """429 with ``Retry-After`` when ``username`` had too many failed logins from this client recently."""
    wait = login_throttle(request).blocked_for(login_key(request, username))
    if wait > 0:
        raise ApiError(
            429,
            "too_many_failed_logins",
            f"too many failed logins for this user name; try again in {wait / 60:.0f} min",
            headers={"Retry-After": str(int(wait) + 1)},
        )


def check_upload_quota(request: Request, principal: Principal) -> None:
    """429 when ``principal`` has used its uploads of the last hour (``settings.upload_quota_per_hour``)."""
    lim = getattr(request.app.state, "upload_quota", None)
    if lim is None:
        quota = request.app.state.settings.upload_quota_per_hour
        lim = request.app.state.upload_quota = RateLimiter(quota, 3600.0)
    wait = lim.blocked_for(principal.username)
    if wait > 0:
        raise ApiError(
            429,
            "upload_quota_exceeded",
            f"upload quota of {lim.limit} per hour used up for {principal.username!r}; try again in {wait / 60:.0f} min",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    lim.add(principal.username)


class _BasicCache:
    """Remember successful Basic checks: ``(user, HMAC(key, password)) -> expiry``; never the password."""

    def __init__(self, key: bytes, ttl: float = BASIC_CACHE_SECONDS, size: int = 256):
        self.key, self.ttl, self.size = key, ttl, size
        self._d: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Lock()

    def _k(self, user: str, password: str) -> tuple[str, bytes]:
        return user, hmac.new(self.key, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def hit(self, user: str, password: str) -> bool:
        k = self._k(user, password)
        with self._lock:
            exp = self._d.get(k)
            if exp is not None and exp > time.monotonic():
                return True
            self._d.pop(k, None)
            return False

    def add(self, user: str, password: str) -> None:
        with self._lock:
            if len(self._d) >= self.size:
                self._d.clear()
            self._d[self._k(user, password)] = time.monotonic() + self.ttl

    def forget(self, user: str) -> None:
        with self._lock:
            for k in [k for k in self._d if k[0] == user]:
                del self._d[k]


def _basic_cache(request: Request) -> _BasicCache:
    cache = getattr(request.app.state, "basic_cache", None)
    if cache is None:
        cache = request.app.state.basic_cache = _BasicCache(request.app.state.settings.signing_key().encode())
    return cache


def optional_principal(
    request: Request, credentials: HTTPBasicCredentials | None = Depends(_basic)
) -> Principal | None:
    """The caller from the session cookie or HTTP Basic credentials, or None.

    The user is looked up in the store on every request, so a removed user
    (``cxr users remove``) loses access at once, also with a live session.
    """
    store = get_service(request).store
    sess = request.session
    name = sess.get("u")
    if isinstance(name, str):
        user = store.get_user(name)
        if user is not None:
            return Principal(user.username, user.role, "upload" if sess.get("s") == "upload" else "full", "session")
        sess.clear()
    if credentials is not None:
        cache = _basic_cache(request)
        user = store.get_user(credentials.username)
        if user is not None and cache.hit(user.username, credentials.password):
            return Principal(user.username, user.role, "full", "basic")
        check_login_allowed(request, credentials.username)
        user = store.authenticate(credentials.username, credentials.password)
        if user is None:
            cache.forget(credentials.username)
            login_throttle(request).add(login_key(request, credentials.username))
            store.audit(credentials.username[:64] or None, "login_failed", detail="http basic")
            raise ApiError(
                401,
                "unauthorized",
                "wrong user name or password",
                headers={"WWW-Authenticate": 'Basic realm="cxrtriage"'},
            )
        cache.add(user.username, credentials.password)
        login_throttle(request).reset(login_key(request, credentials.username))
        return Principal(user.username, user.role, "full", "basic")
    return None


def require_principal(principal: Principal | None = Depends(optional_principal)) -> Principal:
    """API dependency: the caller, or 401 with ``WWW-Authenticate: Basic``."""
    if principal is None:
        raise ApiError(
            401,
            "unauthorized",
            "log in: HTTP Basic credentials (cxr users add) or the session cookie of POST /login",
            headers={"WWW-Authenticate": 'Basic realm="cxrtriage"'},
        )
    return principal


def require_uploader(principal: Principal = Depends(require_principal)) -> Principal:
    """Any authenticated caller may upload (upload-only phone sessions included)."""
    return principal


def require_full(principal: Principal = Depends(require_principal)) -> Principal:
    """A full login (not an upload-only phone session): 403 otherwise."""
    if principal.scope != "full":
        raise ApiError(403, "forbidden", "this upload link only allows uploads; log in to see other studies")
    return principal


def require_radiologist(principal: Principal = Depends(require_principal)) -> Principal:
    """Sign-off: a radiologist with a full login, else 403."""
    if not principal.can_sign:
        raise ApiError(403, "forbidden", f"user {principal.username!r} ({principal.role}) may not sign reports off")
    return principal


def page_principal(request: Request, principal: Principal | None = Depends(optional_principal)) -> Principal:
    """Page dependency: the caller, or a redirect to the login page (:class:`LoginRequired`)."""
    if principal is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    return principal


def authorize_study(request: Request, principal: Principal, study_id: str) -> None:
    """403 unless ``principal`` may read ``study_id`` (upload-only sessions: their own uploads only)."""
    if principal.scope == "full":
        return
    if study_id not in (request.session.get("mine") or []):
        raise ApiError(
            403, "forbidden", "this upload link only shows the studies uploaded with it; log in to see others"
        )


def readable_study(request: Request, principal: Principal, service: StudyService, study_id: str) -> Study:
    """The stored study ``study_id`` if ``principal`` may read it.

    Raises
    ------
    ApiError
        404 for an unknown study, 403 when :func:`authorize_study` refuses.
    """
    rec = service.get(study_id)
    authorize_study(request, principal, rec.id)
    return rec


def remember_upload(request: Request, principal: Principal, study_id: str) -> None:
    """Let an upload-only session read back the study it just uploaded."""
    if principal.scope == "upload":
        mine = [s for s in (request.session.get("mine") or []) if s != study_id]
        request.session["mine"] = (mine + [study_id])[-MAX_SESSION_STUDIES:]


def audit(
    request: Request, principal: Principal | None, action: str, study_id: str | None = None, detail: str | None = None
) -> None:
    """Write one audit-log row (who, what, which study, when); a failure is logged, never raised."""
    try:
        get_service(request).store.audit(principal.username if principal else None, action, study_id, detail)
    except Exception:  # noqa: BLE001 - the audit log must not turn a served answer into a 500
        log.exception("audit log write failed (%s %s)", action, study_id)


def ensure_initial_user(store: StudyStore) -> str | None:
    """Create a radiologist from ``$CXRTRIAGE_INITIAL_USER``/``$CXRTRIAGE_INITIAL_PASSWORD`` when there is no user.

    Returns
    -------
    str or None
        The created user's name, or None (users exist, or the variables are unset).

    Raises
    ------
    UserError
        The variables name an invalid user or a too-short password.
    """
    name, pw = os.environ.get(INITIAL_USER_ENV), os.environ.get(INITIAL_PASSWORD_ENV)
    if not name or not pw or store.user_count() > 0:
        return None
    try:
        store.add_user(name, pw, "radiologist")
    except UserError:
        if store.get_user(name) is not None:  # another replica created it meanwhile
            return None
        raise
    return name


# -- ASGI middlewares ------------------------------------------------------

#: Content-Security-Policy of the pages: own scripts and styles only (inline style attributes for the bars),
#: images from the server or data: URLs (the reports embed their PNGs), no framing, forms post to the server.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

#: Paths served by FastAPI's bundled Swagger UI / ReDoc, which load their code from a CDN: no CSP there.
_NO_CSP = ("/docs", "/redoc")


class SecurityHeadersMiddleware:
    """Pure ASGI middleware adding security headers to every HTTP answer.

    ``Content-Security-Policy`` (:data:`CSP`, not on ``/docs`` and ``/redoc``),
    ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
    ``Referrer-Policy: same-origin`` (upload links never leak to other sites in a Referer; same-origin form posts keep their Origin header) and
    ``Cross-Origin-Opener-Policy: same-origin``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = not scope.get("path", "").startswith(_NO_CSP)

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                have = {k.lower() for k, _ in headers}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if csp:
                    extra.append((b"content-security-policy", CSP.encode()))
                headers += [(k, v) for k, v in extra if k not in have]
                msg = {**msg, "headers": headers}
            await send(msg)

        await self.app(scope, receive, with_headers)


class OriginCheckMiddleware:
    """Refuse cross-site state-changing requests (CSRF) with 403.

    For ``POST``, ``PUT``, ``PATCH`` and ``DELETE``: an ``Origin`` header
    (or, without one, a ``Referer``) whose host differs from the request's
    ``Host`` is refused; a request carrying the session cookie must send one
    of the two (browsers always do). Requests without the cookie (scripts with
    HTTP Basic) and without either header pass. Together with the
    ``SameSite=Lax`` session cookie this is the OWASP "verifying origin with
    standard headers" defence.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE"):
            return await self.app(scope, receive, send)
        h = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = h.get("host", "").strip().lower()
        source = h.get("origin") or h.get("referer")
        reason = None
        if source:
            if not host or urlsplit(source).netloc.lower() != host:
                reason = f"cross-site request refused (Origin {source[:100]!r} is not this server)"
        elif f"{SESSION_COOKIE}=" in h.get("cookie", ""):
            reason = "request with the session cookie but without an Origin or Referer header refused"
        if reason is None:
            return await self.app(scope, receive, send)
        await send_json_error(send, 403, "cross_site_request", reason)


#: Upload endpoints: anonymous requests are refused before their body is read.
UPLOAD_PATHS = ("/api/v1/predict", "/upload")


class AnonymousUploadGuard:
    """Refuse uploads that carry neither credentials nor the session cookie with 401, before the body is parsed.

    FastAPI parses a multipart body before running the authentication
    dependency; without this guard anyone could make the server spool
    ``--max-upload-mb`` per request to disk just to be told 401.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") in UPLOAD_PATHS:
            h = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if "authorization" not in h and f"{SESSION_COOKIE}=" not in h.get("cookie", ""):
                return await send_json_error(
                    send,
                    401,
                    "unauthorized",
                    "log in first: HTTP Basic credentials or the session cookie of POST /login",
                    [(b"www-authenticate", b'Basic realm="cxrtriage"')],
                )
        await self.app(scope, receive, send)


async def send_json_error(
    send: Send, status: int, error: str, reason: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send a complete JSON error answer ``{"error", "reason", "status"}`` from ASGI middleware."""
    body = json.dumps({"error": error, "reason": reason, "status": status}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def signer_name(principal: Principal, display_name: str | None) -> str:
    """``signed_by`` of a report: the user name, or ``"Display Name (username)"`` when a different name is given."""
    name = (display_name or "").strip()
    if not name or name == principal.username:
        return principal.username
    return f"{name} ({principal.username})"


def sign_as(service: StudyService, principal: Principal, study_id: str, body: SignOffIn) -> Study:
    """Sign (or, with ``body.amend``, amend) a study's report as the logged-in radiologist, with the reader's call.

    The caller checks the role (:func:`require_radiologist` or ``principal.can_sign``) and writes the audit row.

    Raises
    ------
    ApiError
        As :meth:`cxrtriage.serve.service.StudyService.sign`.
    """
    return service.sign(
        study_id,
        signer_name(principal, body.radiologist),
        body.findings,
        body.impression,
        username=principal.username,
        agrees_with_ai=body.agrees_with_ai,
        reader_label=body.reader_label,
        amend=body.amend,
    )


def login_redirect(next_path: str) -> str:
    """URL of the login page that returns to ``next_path``."""
    return "/login?next=" + quote(safe_next(next_path), safe="/")
