"""JWT authentication: verify at the handshake, mint dev tokens.

HS256 with a shared secret, or RS256/ES256 with a public key (PEM). Tokens arrive in the
``Authorization: Bearer`` header, a ``bearer.<token>`` WebSocket subprotocol (browsers cannot
set headers), or a ``token`` query parameter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson

from agentia.settings import Auth

BEARER_PREFIX = "bearer."
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SPARE_BITS = {0: 0, 2: 0x0F, 3: 0x03}
"""Bits of the last character that encode nothing, by segment length mod 4: zero if canonical."""


SCOPES = frozenset({"sessions:read", "sessions:write", "sessions:operate", "users:delete"})
"""The scopes a service token may carry (space-separated ``scope`` claim, docs/backend.md).
A scope not in this set grants nothing: it is ignored at verification (a token minted for a
newer deployment still works here with what this one knows); ``agentia token`` refuses it."""
MAX_SCOPE_CLAIM = 512
"""Characters of a ``scope`` claim at most (a longer one makes the token invalid)."""


class AuthError(Exception):
    """The token is missing, malformed, expired or signed with the wrong key."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    expires: float | None
    scopes: frozenset[str] = frozenset()
    """Known scopes of a service token; empty for a user token (today's rights only)."""

    def can(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True, slots=True)
class Verifier:
    key: str
    algorithms: tuple[str, ...] = ("HS256",)
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 5.0
    cache_size: int = 50_000
    """Verified tokens remembered (token -> identity): a reconnect storm presents the same
    tokens again; expiry is still checked on every use."""
    _cache: dict[str, Identity] = field(default_factory=dict, repr=False, compare=False)

    def verify(self, token: str) -> Identity:
        if not canonical(token):
            # One token, one string: base64 decoders ignore junk and spare bits, and every
            # variant would otherwise be a separate cache entry (and a separate verification).
            raise AuthError("invalid token: not three canonical base64url segments")
        ident = self._cache.get(token)
        if ident is None:
            ident = self._verify(token)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()  # cheap and bounded; a storm refills it at once
            self._cache[token] = ident
        elif ident.expires is not None and time.time() > ident.expires + self.leeway_s:
            del self._cache[token]
            raise AuthError("token expired")
        return ident

    def _verify(self, token: str) -> Identity:
        claims = self._hs256(token) if self._fast else None
        if claims is None:
            claims = self._pyjwt(token)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 128:
            raise AuthError("token 'sub' must be a non-empty string")
        exp = claims.get("exp")
        return Identity(sub, float(exp) if exp is not None else None,
                        scopes_of(claims.get("scope")))

    @property
    def _fast(self) -> bool:
        return (self.algorithms == ("HS256",) and self.audience is None
                and self.issuer is None)

    def _pyjwt(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.key, algorithms=list(self.algorithms), audience=self.audience,
                issuer=self.issuer, leeway=self.leeway_s,
                options={"require": ["sub", "exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        return claims

    def _hs256(self, token: str) -> dict[str, Any] | None:
        """The common case (HS256, no audience or issuer) without PyJWT's generality: ~6x
        cheaper at the handshake. Anything unusual returns None and PyJWT decides, so the
        answers are PyJWT's (tests/unit/test_auth.py compares both on good and bad tokens)."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        head, body, sig = parts
        try:
            header = orjson.loads(_b64(head))
            if not isinstance(header, dict) or header.get("alg") != "HS256" or set(header) - {
                    "alg", "typ"}:
                return None
            mac = hmac.new(self.key.encode(), f"{head}.{body}".encode(), hashlib.sha256)
            if not hmac.compare_digest(mac.digest(), _b64(sig)):
                raise AuthError("invalid token: Signature verification failed")
            claims = orjson.loads(_b64(body))
        except (ValueError, orjson.JSONDecodeError, UnicodeEncodeError):
            return None
        if not isinstance(claims, dict) or set(claims) - {"sub", "exp", "iat"}:
            return None  # nbf, aud, iss, jti...: PyJWT checks them
        exp, iat = claims.get("exp"), claims.get("iat", 0)
        if (type(exp) is not int or type(iat) is not int or "sub" not in claims):
            return None
        now = time.time()
        if exp <= now - self.leeway_s:
            raise AuthError("token expired")
        if iat > now + self.leeway_s:
            return None  # "not yet valid": PyJWT words it
        return claims


def scopes_of(claim: object) -> frozenset[str]:
    """The known scopes of a ``scope`` claim (absent: none); a claim that is not a string of
    at most MAX_SCOPE_CLAIM characters makes the token invalid."""
    if claim is None:
        return frozenset()
    if not isinstance(claim, str) or len(claim) > MAX_SCOPE_CLAIM:
        raise AuthError("token 'scope' must be a space-separated string")
    return SCOPES.intersection(claim.split())


def canonical(token: str) -> bool:
    """Three segments, each the unpadded base64url encoding of its bytes and nothing else (the
    alphabet only, no ``=``, a valid length, spare bits of the last character zero)."""
    parts = token.split(".")
    return len(parts) == 3 and all(_canonical_segment(p) for p in parts)


def _canonical_segment(seg: str) -> bool:
    rest = len(seg) % 4
    if rest == 1 or not _B64URL.fullmatch(seg):
        return False
    return rest == 0 or not _ALPHABET.index(seg[-1]) & _SPARE_BITS[rest]


def verifier_for(s: Auth) -> Verifier:
    """The verifier a process's settings describe (the edge's and the control plane's)."""
    algos = tuple(a.strip() for a in s.jwt_algorithms.split(",") if a.strip())
    key = s.jwt_public_key if any(a[:2] in ("RS", "ES", "PS") for a in algos) else s.jwt_secret
    return Verifier(key, algos)


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def mint(secret: str, user: str, ttl_s: int = 3600, algorithm: str = "HS256",
         **claims: object) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + ttl_s, **claims}, secret,
                      algorithm=algorithm)


def token_from(headers: dict[str, str], query: str) -> str | None:
    """Find the token: Authorization header, then subprotocol, then ?token=."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    for proto in headers.get("sec-websocket-protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(BEARER_PREFIX):
            return proto[len(BEARER_PREFIX):] or None
    values = parse_qs(query).get("token")
    return values[0] if values else None
