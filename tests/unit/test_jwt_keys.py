"""The JWT keyring (core/jwt_keys.py) and tokens across a rotation (api/auth.py): the new key
signs, the previous one verifies until its `until=`, tokens without a key id still verify."""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi import HTTPException

from api.auth import WRITE_SCOPE, decode_token, issue_token
from core.jwt_keys import KEYRING_HEADER, JwtKey, parse_keys
from core.settings import Settings

OLD = "old-key-old-key-old-key-old-key-0"
NEW = "new-key-new-key-new-key-new-key-1"


def keyring(*lines: str) -> str:
    return "\n".join((KEYRING_HEADER + ": the first key signs", *lines)) + "\n"


def settings_with(secret: str, **extra) -> Settings:
    return Settings(jwt_secret=secret, **extra)


def test_a_plain_value_is_the_one_key_even_with_spaces_and_hashes():
    assert parse_keys("# not a keyring, a key") == [JwtKey("# not a keyring, a key")]


def test_a_keyring_lists_its_keys_signing_one_first_and_skips_comments():
    keys = parse_keys(keyring(NEW, "", "# retired by a rotation", f"until=1700000000 {OLD}"))
    assert keys == [JwtKey(NEW), JwtKey(OLD, 1_700_000_000)]


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ((), "holds no key"),
        ((f"until=5 {NEW}",), "first key signs"),
        ((NEW, f"until=soon {OLD}"), "line 3"),
    ],
)
def test_a_broken_keyring_is_refused_without_quoting_a_key(lines, problem):
    with pytest.raises(ValueError, match=problem) as info:
        parse_keys(keyring(*lines))
    assert OLD not in str(info.value)
    assert NEW not in str(info.value)


def test_settings_refuse_a_broken_keyring_naming_jwt_secret():
    with pytest.raises(ValueError, match="JWT_SECRET: the keyring holds no key"):
        settings_with(keyring())


def test_a_key_id_names_the_key_without_revealing_it():
    assert JwtKey(NEW).kid == JwtKey(NEW, 5).kid != JwtKey(OLD).kid
    assert len(JwtKey(NEW).kid) == 16
    assert JwtKey(NEW).kid not in NEW


def test_tokens_carry_the_signing_keys_id():
    settings = settings_with(keyring(NEW, OLD))
    token = issue_token(settings, "alice", [WRITE_SCOPE])
    assert jwt.get_unverified_header(token)["kid"] == JwtKey(NEW).kid
    jwt.decode(token, NEW, ["HS256"], audience=settings.jwt_audience)


def test_a_plain_value_signs_with_its_derived_id():
    token = issue_token(settings_with(OLD), "alice", [WRITE_SCOPE])
    assert jwt.get_unverified_header(token)["kid"] == JwtKey(OLD).kid


def test_across_a_rotation_every_token_keeps_verifying():
    before = settings_with(OLD)
    legacy = jwt.encode(  # issued by a release whose tokens had no kid
        {"sub": "bob", "iss": before.jwt_issuer, "aud": before.jwt_audience,
         "exp": int(time.time()) + 60, "scope": WRITE_SCOPE},
        OLD, "HS256",
    )  # fmt: skip
    old_token = issue_token(before, "alice", [WRITE_SCOPE])
    # Step 1: the new key verifies before any container signs with it.
    step1 = settings_with(keyring(OLD, NEW))
    # Step 2: it signs; the old one is retired, verifying for a while yet.
    step2 = settings_with(keyring(NEW, f"until={int(time.time()) + 60} {OLD}"))
    new_token = issue_token(step2, "carol", [WRITE_SCOPE])
    for settings in (before, step1, step2):
        assert decode_token(settings, old_token)["sub"] == "alice"
        assert decode_token(settings, legacy)["sub"] == "bob"
    for settings in (step1, step2):
        assert decode_token(settings, new_token)["sub"] == "carol"


def test_a_retired_key_stops_verifying_at_its_until():
    settings = settings_with(keyring(NEW, f"until={int(time.time()) - 1} {OLD}"))
    old_token = issue_token(settings_with(OLD), "alice", [WRITE_SCOPE])
    with pytest.raises(HTTPException) as info:
        decode_token(settings, old_token)
    assert info.value.status_code == 401
    assert info.value.detail == "token signature is invalid: its key (kid) is unknown or retired"


def test_a_token_without_kid_from_a_dropped_key_is_refused_as_badly_signed():
    settings = settings_with(keyring(NEW))
    legacy = jwt.encode(
        {"sub": "bob", "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
         "exp": int(time.time()) + 60},
        OLD, "HS256",
    )  # fmt: skip
    with pytest.raises(HTTPException) as info:
        decode_token(settings, legacy)
    assert info.value.detail == "token signature is invalid"


def test_a_forged_kid_pointing_at_a_real_key_still_needs_its_signature():
    settings = settings_with(keyring(NEW, OLD))
    forged = jwt.encode(
        {"sub": "eve", "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
         "exp": int(time.time()) + 60},
        "an-attackers-key-an-attackers-key", "HS256", headers={"kid": JwtKey(NEW).kid},
    )  # fmt: skip
    with pytest.raises(HTTPException) as info:
        decode_token(settings, forged)
    assert info.value.detail == "token signature is invalid"


def test_production_names_the_weak_key_of_a_keyring(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValueError, match="JWT_SECRET's key 2 is shorter than 32 bytes"):
        settings_with(keyring("0123456789abcdef" * 4, "short"))


def test_a_retired_key_verifies_for_the_longest_lifetime_and_the_rollout():
    settings = Settings(jwt_ttl_seconds=600, jwt_rollout_seconds=120)
    assert settings.jwt_retired_key_seconds == 720
