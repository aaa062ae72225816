"""Service tokens' ``scope`` claim (gateway/auth.py): known scopes kept, unknown ignored, a
malformed claim refused, user tokens without scopes; both verification paths agree."""

from __future__ import annotations

import pytest

from gateway.auth import MAX_SCOPE_CLAIM, SCOPES, AuthError, Verifier, mint, scopes_of

SECRET = "unit-test-secret-0123456789-abcdefghijklmnopqrstuv"


def test_scopes_of_a_claim() -> None:
    assert scopes_of(None) == frozenset()
    assert scopes_of("") == frozenset()
    assert scopes_of(" sessions:read  users:delete ") == {"sessions:read", "users:delete"}
    assert scopes_of("sessions:read admin:all session:write") == {"sessions:read"}
    assert {"sessions:read", "sessions:write", "sessions:operate", "users:delete"} == SCOPES
    for bad in (["sessions:read"], 1, "x" * (MAX_SCOPE_CLAIM + 1)):
        with pytest.raises(AuthError):
            scopes_of(bad)


@pytest.mark.parametrize("algorithms", [("HS256",), ("HS256", "HS384")])
def test_a_service_token_carries_its_scopes(algorithms: tuple[str, ...]) -> None:
    v = Verifier(SECRET, algorithms)  # the fast HS256 path and PyJWT's
    user = v.verify(mint(SECRET, "ann"))
    assert user.scopes == frozenset() and not user.can("sessions:read")
    svc = v.verify(mint(SECRET, "svc", scope="sessions:write users:delete nonsense"))
    assert svc.user == "svc" and svc.scopes == {"sessions:write", "users:delete"}
    assert svc.can("users:delete") and not svc.can("sessions:read")
    with pytest.raises(AuthError):
        v.verify(mint(SECRET, "svc", scope=["sessions:write"]))
