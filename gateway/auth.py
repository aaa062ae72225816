"""JWT authentication: verify at the handshake, mint dev tokens.

HS256 with a shared secret, or RS256/ES256 with a public key (PEM). Tokens arrive in the
``Authorization: Bearer`` header, a ``bearer.<token>`` WebSocket subprotocol (browsers cannot
set headers), or a ``token`` query parameter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import parse_qs

import jwt

BEARER_PREFIX = "bearer."


class AuthError(Exception):
    """The token is missing, malformed, expired or signed with the wrong key."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    expires: float | None


@dataclass(frozen=True, slots=True)
class Verifier:
    key: str
    algorithms: tuple[str, ...] = ("HS256",)
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 5.0

    def verify(self, token: str) -> Identity:
        try:
            claims = jwt.decode(
                token, self.key, algorithms=list(self.algorithms), audience=self.audience,
                issuer=self.issuer, leeway=self.leeway_s,
                options={"require": ["sub", "exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 128:
            raise AuthError("token 'sub' must be a non-empty string")
        exp = claims.get("exp")
        return Identity(sub, float(exp) if exp is not None else None)


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
