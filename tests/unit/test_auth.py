"""Unit tests for gateway/auth.py: JWT verification (HS256, RS256, ES256) and token lookup."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import AuthError, Identity, Verifier, mint, token_from

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"
OTHER = "another-secret-that-is-also-long-enough-for-hs256"


def pem_pair(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    private = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    return pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_keys() -> tuple[str, str]:
    return pem_pair(ec.generate_private_key(ec.SECP256R1()))


# ---------------------------------------------------------------- HS256


def test_hs256_round_trip() -> None:
    before = time.time()
    ident = Verifier(SECRET).verify(mint(SECRET, "alice", 600))
    assert isinstance(ident, Identity)
    assert ident.user == "alice"
    assert ident.expires is not None
    assert before + 600 - 2 <= ident.expires <= time.time() + 600 + 1


def test_mint_carries_extra_claims() -> None:
    tok = mint(SECRET, "bob", 60, aud="agentia", role="admin")
    claims = jwt.decode(tok, SECRET, algorithms=["HS256"], audience="agentia")
    assert claims["sub"] == "bob"
    assert claims["role"] == "admin"
    assert claims["exp"] - claims["iat"] == 60


def test_expired_token() -> None:
    tok = mint(SECRET, "alice", ttl_s=-60)  # well past the 5 s leeway
    with pytest.raises(AuthError) as info:
        Verifier(SECRET).verify(tok)
    assert str(info.value) == "token expired"


def test_leeway_accepts_just_expired_token() -> None:
    tok = mint(SECRET, "alice", ttl_s=-1)
    assert Verifier(SECRET, leeway_s=30).verify(tok).user == "alice"
    with pytest.raises(AuthError, match="token expired"):
        Verifier(SECRET, leeway_s=0).verify(tok)


def test_wrong_secret() -> None:
    with pytest.raises(AuthError) as info:
        Verifier(SECRET).verify(mint(OTHER, "alice"))
    assert str(info.value).startswith("invalid token")


@pytest.mark.parametrize("tok", ["", "garbage", "a.b.c", "Bearer x"])
def test_malformed_token(tok: str) -> None:
    with pytest.raises(AuthError, match="invalid token"):
        Verifier(SECRET).verify(tok)


def test_missing_sub() -> None:
    tok = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError):
        Verifier(SECRET).verify(tok)


def test_missing_exp() -> None:
    tok = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="invalid token"):
        Verifier(SECRET).verify(tok)


@pytest.mark.parametrize("sub", ["", "x" * 129])
def test_bad_sub(sub: str) -> None:
    tok = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError):
        Verifier(SECRET).verify(tok)


def test_longest_sub_accepted() -> None:
    assert Verifier(SECRET).verify(mint(SECRET, "u" * 128)).user == "u" * 128


def test_audience_and_issuer_checked_when_configured() -> None:
    v = Verifier(SECRET, audience="agentia", issuer="idp")
    assert v.verify(mint(SECRET, "alice", aud="agentia", iss="idp")).user == "alice"
    with pytest.raises(AuthError):
        v.verify(mint(SECRET, "alice", aud="other", iss="idp"))
    with pytest.raises(AuthError):
        v.verify(mint(SECRET, "alice", aud="agentia", iss="evil"))
    with pytest.raises(AuthError):
        v.verify(mint(SECRET, "alice"))


def test_alg_none_rejected() -> None:
    tok = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(AuthError):
        Verifier(SECRET).verify(tok)


# ---------------------------------------------------------------- RS256 / ES256


def test_rs256_round_trip(rsa_keys: tuple[str, str]) -> None:
    private, public = rsa_keys
    tok = mint(private, "carol", 300, algorithm="RS256")
    assert jwt.get_unverified_header(tok)["alg"] == "RS256"
    ident = Verifier(key=public, algorithms=("RS256",)).verify(tok)
    assert ident.user == "carol"
    assert ident.expires is not None and ident.expires > time.time()


def test_es256_round_trip(ec_keys: tuple[str, str]) -> None:
    private, public = ec_keys
    tok = mint(private, "dave", 300, algorithm="ES256")
    assert jwt.get_unverified_header(tok)["alg"] == "ES256"
    assert Verifier(key=public, algorithms=("ES256",)).verify(tok).user == "dave"


def test_rs256_wrong_key_rejected(rsa_keys: tuple[str, str]) -> None:
    _, public = rsa_keys
    other_private, _ = pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    tok = mint(other_private, "carol", algorithm="RS256")
    with pytest.raises(AuthError, match="invalid token"):
        Verifier(key=public, algorithms=("RS256",)).verify(tok)


def test_algorithm_not_allowed(rsa_keys: tuple[str, str], ec_keys: tuple[str, str]) -> None:
    with pytest.raises(AuthError):
        Verifier(key=rsa_keys[1], algorithms=("RS256",)).verify(
            mint(ec_keys[0], "eve", algorithm="ES256"))
    with pytest.raises(AuthError):
        Verifier(key=rsa_keys[1], algorithms=("RS256",)).verify(mint(SECRET, "eve"))


def test_expired_rs256(rsa_keys: tuple[str, str]) -> None:
    private, public = rsa_keys
    with pytest.raises(AuthError, match=r"^token expired$"):
        Verifier(key=public, algorithms=("RS256",)).verify(
            mint(private, "carol", -60, algorithm="RS256"))


# ---------------------------------------------------------------- token_from


def test_token_from_authorization_header() -> None:
    assert token_from({"authorization": "Bearer abc.def"}, "") == "abc.def"
    assert token_from({"authorization": "bearer   xyz  "}, "") == "xyz"
    assert token_from({"authorization": "BEARER q"}, "") == "q"


def test_token_from_header_wins_over_subprotocol_and_query() -> None:
    headers = {"authorization": "Bearer hdr", "sec-websocket-protocol": "agentia.v1, bearer.sub"}
    assert token_from(headers, "token=qry") == "hdr"


def test_token_from_non_bearer_header_falls_through() -> None:
    headers = {"authorization": "Basic dXNlcjpwYXNz", "sec-websocket-protocol": "bearer.sub"}
    assert token_from(headers, "token=qry") == "sub"
    assert token_from({"authorization": "Basic dXNlcjpwYXNz"}, "token=qry") == "qry"


def test_token_from_subprotocol() -> None:
    assert token_from({"sec-websocket-protocol": "bearer.tok1"}, "") == "tok1"
    assert token_from({"sec-websocket-protocol": "agentia.v1, bearer.tok2"}, "") == "tok2"
    assert token_from({"sec-websocket-protocol": "bearer.tok3,agentia.v1"}, "") == "tok3"
    assert token_from({"sec-websocket-protocol": "agentia.v1"}, "") is None


def test_token_from_subprotocol_wins_over_query() -> None:
    headers = {"sec-websocket-protocol": "agentia.v1, bearer.sub"}
    assert token_from(headers, "session=s1&token=qry") == "sub"


def test_token_from_query() -> None:
    assert token_from({}, "token=qry") == "qry"
    assert token_from({}, "session=s1&token=a.b.c") == "a.b.c"
    assert token_from({"sec-websocket-protocol": "agentia.v1"}, "token=q2") == "q2"


def test_token_from_nothing() -> None:
    assert token_from({}, "") is None
    assert token_from({}, "session=s1") is None
    assert token_from({"authorization": "Bearer "}, "") is None


def test_token_from_round_trip_with_verifier() -> None:
    tok = mint(SECRET, "frank")
    found = token_from({"sec-websocket-protocol": f"agentia.v1, bearer.{tok}"}, "")
    assert found is not None
    assert Verifier(SECRET).verify(found).user == "frank"


def _both(v: Verifier, token: str) -> tuple[object, object]:
    """What the HS256 fast path and PyJWT each say of a token (identity or error text)."""
    def run(f: object) -> object:
        try:
            return f(token)  # type: ignore[operator]
        except AuthError as exc:
            return f"error: {exc}"
    fast = run(lambda t: v._hs256(t) or "fallback")
    slow = run(v._pyjwt)
    return fast, slow


def test_hs256_fast_path_agrees_with_pyjwt() -> None:
    import base64 as b64
    import time as t

    import jwt as pyjwt

    secret = "s" * 40
    v = Verifier(secret)
    now = int(t.time())

    def enc(claims: dict[str, object], key: str = secret, **kw: object) -> str:
        return pyjwt.encode(claims, key, algorithm="HS256", **kw)  # type: ignore[arg-type]

    good = enc({"sub": "u", "exp": now + 60, "iat": now})
    fast, slow = _both(v, good)
    assert fast == slow == {"sub": "u", "exp": now + 60, "iat": now}
    cases = {
        "expired": enc({"sub": "u", "exp": now - 60}),
        "within leeway": enc({"sub": "u", "exp": now - 2}),
        "wrong key": enc({"sub": "u", "exp": now + 60}, key="k" * 40),
        "tampered body": good.split(".")[0] + "." + b64.urlsafe_b64encode(
            b'{"sub":"admin","exp":9999999999}').decode().rstrip("=") + "." + good.split(".")[2],
        "truncated": good[:-3],
        "two segments": ".".join(good.split(".")[:2]),
    }
    for name, tok in cases.items():
        fast, slow = _both(v, tok)
        assert fast == "fallback" or fast == slow or (
            isinstance(fast, str) and isinstance(slow, str) and fast.startswith("error")
            and slow.startswith("error")), name
    # what the fast path does not judge, PyJWT does
    for tok in (enc({"sub": "u", "exp": now + 60, "nbf": now + 600}),
                enc({"sub": "u", "exp": "soon"}),
                enc({"sub": "u"}),
                enc({"sub": "u", "exp": now + 60, "iat": now + 600}),
                enc({"sub": "u", "exp": now + 60}, headers={"kid": "x"}),
                pyjwt.encode({"sub": "u", "exp": now + 60}, secret * 2, algorithm="HS512"),
                pyjwt.encode({"sub": "u", "exp": now + 60}, None, algorithm="none")):
        assert v._hs256(tok) is None
    # and through verify() each answer is the same as PyJWT's alone
    for tok in [good, *cases.values()]:
        try:
            a: object = Verifier(secret).verify(tok).user
        except AuthError as exc:
            a = type(exc)
        try:
            claims = Verifier(secret)._pyjwt(tok)
            b: object = claims["sub"]
        except AuthError as exc:
            b = type(exc)
        assert a == b, tok


def test_cached_token_still_expires() -> None:
    import time as t

    v = Verifier("s" * 40, leeway_s=0)
    tok = mint("s" * 40, "u", ttl_s=1)
    assert v.verify(tok).user == "u"
    assert v.verify(tok).user == "u"  # from the cache
    t.sleep(2.1)
    with pytest.raises(AuthError, match="expired"):
        v.verify(tok)


# ---------------------------------------------------------------- canonical base64url (issue 10)

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _variants(tok: str, segment: int) -> list[str]:
    """Other strings that base64 decoders read as the same bytes in one segment: spare bits of
    the last character set, '=' padding, junk characters decoders skip, trailing junk."""
    import base64 as b64
    import binascii

    parts = tok.split(".")
    seg = parts[segment]
    raw = b64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))
    out = [seg + "=" * (-len(seg) % 4 or 4), seg + "!", "!" + seg, seg[:2] + " " + seg[2:],
           seg[:1] + "\n" + seg[1:], seg + "+", seg[:3] + "/" + seg[3:]]
    for c in ALPHABET:  # same bytes, different last character
        cand = seg[:-1] + c
        try:
            same = b64.urlsafe_b64decode(cand + "=" * (-len(cand) % 4)) == raw
        except binascii.Error:
            same = False
        if cand != seg and same:
            out.append(cand)
    return [".".join([*parts[:segment], v, *parts[segment + 1:]]) for v in out]


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_non_canonical_segments_refused_before_the_cache(segment: int) -> None:
    v = Verifier(SECRET)
    tok = mint(SECRET, "alice", 600)
    assert v.verify(tok).user == "alice"
    variants = _variants(tok, segment)
    assert len(variants) >= 6
    spare_bits = [t for t in variants if t.split(".")[segment][-1] in ALPHABET
                  and len(t) == len(tok)]
    if len(tok.split(".")[segment]) % 4:
        assert spare_bits, "a segment whose length is not a multiple of 4 has spare bits"
    for bad in variants:
        with pytest.raises(AuthError, match="invalid token: not three canonical base64url"):
            v.verify(bad)
    assert list(v._cache) == [tok]  # no variant became a cache entry


def test_canonical_accepts_every_encoding() -> None:
    import base64 as b64

    from gateway.auth import canonical

    for n in range(0, 70):
        seg = b64.urlsafe_b64encode(bytes(range(256))[n:n * 2 + 1]).decode().rstrip("=")
        assert canonical(f"{seg}.{seg}.{seg}"), seg
    for bad in ("a.b", "a.b.c.d", "AAAA.AAAA.AAAAA", "AA.AA.A+", "AA.AA.A/", "AA.AA.AB",
                "AA.AA.AAA=", "AA.AA.AAAAA", "AA.AA.AA==", "AA.AA. AA"):
        assert not canonical(bad), bad
