"""Token checks: expiry, issuer, audience, signature, scope."""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi import HTTPException

from api.auth import WRITE_SCOPE, decode_token, issue_token
from core.settings import Settings


@pytest.fixture
def settings():
    return Settings(jwt_secret="unit-test-secret-unit-test-secret")


def claims_of(settings, token):
    return decode_token(settings, token)


def test_round_trip(settings):
    claims = claims_of(settings, issue_token(settings, "alice", [WRITE_SCOPE]))
    assert claims["sub"] == "alice"
    assert claims["scope"] == WRITE_SCOPE


def _forge(settings, **overrides):
    now = int(time.time())
    claims = {
        "sub": "mallory",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + 60,
        "scope": WRITE_SCOPE,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), "HS256")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": int(time.time()) - 10}, "expired"),
        ({"aud": "another-api"}, "audience"),
        ({"iss": "someone-else"}, "issuer"),
        ({"sub": None}, "'sub'"),
        ({"exp": None}, "'exp'"),
    ],
)
def test_rejections_say_why(settings, overrides, message):
    with pytest.raises(HTTPException) as info:
        claims_of(settings, _forge(settings, **overrides))
    assert info.value.status_code == 401
    assert message in info.value.detail


def test_wrong_key(settings):
    other = Settings(jwt_secret="another-secret-another-secret-xx")
    with pytest.raises(HTTPException) as info:
        claims_of(settings, issue_token(other, "eve", [WRITE_SCOPE]))
    assert "signature" in info.value.detail


def test_garbage(settings):
    with pytest.raises(HTTPException) as info:
        claims_of(settings, "not.a.jwt")
    assert info.value.status_code == 401
    assert "malformed" in info.value.detail


def test_alg_none_refused(settings):
    token = jwt.encode(
        {
            "sub": "x",
            "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience,
            "exp": int(time.time()) + 60,
        },
        None,
        algorithm="none",
    )
    with pytest.raises(HTTPException):
        claims_of(settings, token)


def test_token_command_prints_a_valid_token(capsys, monkeypatch):
    from api import token
    from core import settings as settings_module

    monkeypatch.setenv("JWT_SECRET", "command-test-secret-command-test")
    settings_module.get_settings.cache_clear()
    try:
        token.main(["bob", "--ttl", "120"])
        printed = capsys.readouterr().out.strip()
        claims = decode_token(settings_module.get_settings(), printed)
    finally:
        settings_module.get_settings.cache_clear()
    assert claims["sub"] == "bob"
    assert 100 < claims["exp"] - claims["iat"] <= 120
