"""Who may do what: bearer tokens with scopes, Origin checks and CORS headers.

A token is read from the ``Authorization: Bearer`` header, the ``tstream_token``
cookie, or the ``access_token`` query parameter (for ``EventSource`` and browser
WebSockets, which cannot set headers), in that order. It is compared with every
configured token in constant time. Tokens never reach the logs: the hub logs paths
without their query strings.

Without configured tokens every request is allowed; :meth:`HubConfig.check_exposure`
keeps such a hub on loopback unless ``--insecure`` is given.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Final, final
from urllib.parse import urlsplit

from .config import TokenSpec

COOKIE: Final = "tstream_token"
QUERY: Final = "access_token"
_HTTP_SCHEMES: Final = {"ws": "http", "wss": "https"}


class AuthError(Exception):
    """Refused: ``status`` is 401 (no or unknown token) or 403 (missing scope/origin)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


def token_from(
    headers: Mapping[str, str], query: Mapping[str, str], cookies: Mapping[str, str]
) -> str | None:
    """The token a request carries, if any.

    Raises:
        AuthError: 401 for a malformed ``Authorization`` header.
    """
    header = headers.get("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthError(401, "unauthorized", "Authorization: use 'Bearer <token>'")
        return value.strip()
    return cookies.get(COOKIE) or query.get(QUERY) or None


@final
class Auth:
    """Checks tokens and scopes.

    Args:
        tokens: the accepted tokens; empty means no authentication.
    """

    def __init__(self, tokens: Sequence[TokenSpec]) -> None:
        self._tokens = [(t.token.encode(), t.scopes) for t in tokens]

    @property
    def enabled(self) -> bool:
        """Whether any token is configured."""
        return bool(self._tokens)

    def scopes(self, token: str | None) -> frozenset[str]:
        """The scopes ``token`` grants (empty when unknown). Every configured token is
        compared, whatever matches, so the time taken says nothing about the tokens."""
        if token is None:
            return frozenset()
        given = token.encode()
        granted: frozenset[str] = frozenset()
        for known, scopes in self._tokens:
            if hmac.compare_digest(known, given):
                granted = scopes
        return granted

    def require(self, token: str | None, scope: str) -> None:
        """Raise AuthError unless ``token`` grants ``scope`` (or auth is off)."""
        if not self._tokens:
            return
        if token is None:
            raise AuthError(401, "unauthorized", "a bearer token is required")
        scopes = self.scopes(token)
        if not scopes:
            raise AuthError(401, "unauthorized", "unknown token")
        if scope not in scopes:
            raise AuthError(403, "forbidden", f"this token lacks the {scope!r} scope")


def origin_allowed(
    origin: str | None, host: str | None, allowlist: Sequence[str], scheme: str | None = None
) -> bool:
    """Whether a browser on ``origin`` may use the API (and open WebSockets).

    Requests without an ``Origin`` (programs, curl) and same-origin requests pass;
    other origins must be in ``allowlist`` (``*`` allows any). Same origin means the
    same host and, when ``scheme`` (the request's: ``http``, ``https``, ``ws``, ``wss``)
    is given, the same scheme: behind a TLS proxy that is what ``X-Forwarded-Proto``
    tells.
    """
    if origin is None:
        return True
    origin = origin.lower()
    if "*" in allowlist or origin in allowlist:
        return True
    if host:
        parts = urlsplit(origin)
        if scheme is not None and parts.scheme != _HTTP_SCHEMES.get(scheme, scheme):
            return False
        return parts.netloc == host.lower()
    return False


def host_allowed(host: str | None, *, auth_enabled: bool, insecure: bool) -> bool:
    """Whether a request's ``Host`` may reach a hub without tokens.

    A hub without tokens listens on loopback only, so every legitimate ``Host`` is a
    loopback name or address. Refusing other names defeats DNS rebinding: a page on
    ``evil.example`` whose name is made to resolve to 127.0.0.1 sends
    ``Host: evil.example`` and is refused.
    """
    if auth_enabled or insecure or host is None:
        return True
    name = host.lower()
    if name.startswith("[") and "]" in name:  # [v6] or [v6]:port
        name = name[1 : name.index("]")]
    elif name.count(":") == 1:  # name:port or v4:port (a bare v6 address has more)
        name = name.split(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def client_allowed(client: str, *, auth_enabled: bool, insecure: bool) -> bool:
    """Whether ``client`` (an address, or ``unix``) may reach a hub without tokens.

    Such a hub listens on loopback only, so only a proxy on this machine can bring it a
    client from elsewhere: that client is refused, as if the hub had been bound beyond
    loopback without a token.
    """
    if auth_enabled or insecure or client == "unix":
        return True
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


def cors_headers(origin: str | None, allowlist: Sequence[str]) -> dict[str, str]:
    """Response headers letting ``origin`` read the answer, if it is allowed."""
    if origin is None or not allowlist:
        return {}
    if origin.lower() not in allowlist and "*" not in allowlist:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "Retry-After",
        "Vary": "Origin",
    }


def preflight_headers(origin: str, allowlist: Sequence[str]) -> dict[str, str]:
    """Headers answering a CORS preflight from an allowed ``origin``."""
    headers = cors_headers(origin, allowlist)
    if headers:
        headers.update(
            {
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID",
                "Access-Control-Max-Age": "600",
            }
        )
    return headers
