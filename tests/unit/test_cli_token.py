"""`agentia token`: signed with AGENTIA_JWT_SECRET, or with the public dev secret and a warning."""

from __future__ import annotations

import os
import subprocess
import sys

import jwt

from agentia.settings import DEV_SECRET


def token(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "AGENTIA_JWT_SECRET"}
    return subprocess.run([sys.executable, "-m", "launch.cli", "token", "--user", "u",
                           "--ttl", "60"], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60, check=True)


def test_without_a_secret_it_says_the_token_is_for_dev_mode_only() -> None:
    r = token({})
    assert "public dev secret" in r.stderr and "AGENTIA_DEV=true" in r.stderr
    claims = jwt.decode(r.stdout.strip(), DEV_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u" and claims["exp"] - claims["iat"] == 60


def test_with_a_secret_it_signs_quietly() -> None:
    secret = "s" * 40
    r = token({"AGENTIA_JWT_SECRET": secret})
    assert r.stderr == ""
    assert jwt.decode(r.stdout.strip(), secret, algorithms=["HS256"])["sub"] == "u"
