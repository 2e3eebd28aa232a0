"""Bearer JWTs for writes. Reads stay public.

401: no token, or one that is malformed, expired, signed with another key, or for another issuer
or audience. 403: a valid token without the scope the operation needs.

Tokens name their key in the `kid` header: the keyring's first key signs, and a token verifies
against the key it names while that key does (core/jwt_keys.py; a rotation retires the previous
key only after the longest token lifetime). A token without `kid` was issued before keys had ids:
it is checked against each key that still verifies, so it lasts until it expires.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import settings_of
from core.settings import Settings

WRITE_SCOPE = "write"

_bearer = HTTPBearer(auto_error=False, description="A token from `python -m api.token SUBJECT`")


def issue_token(
    settings: Settings, subject: str, scopes: list[str], ttl_seconds: int | None = None
) -> str:
    now = int(time.time())
    claims = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + (ttl_seconds or settings.jwt_ttl_seconds),
        "scope": " ".join(scopes),
    }
    key = settings.jwt_keys[0]
    return jwt.encode(claims, key.secret, settings.jwt_algorithm, headers={"kid": key.kid})


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=message,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _candidate_keys(settings: Settings, token: str) -> list[str]:
    """The keys that may have signed the token: the one its kid names, or, without a kid, each."""
    kid = jwt.get_unverified_header(token).get("kid")
    now = time.time()
    keys = [key for key in settings.jwt_keys if key.verifies_at(now)]
    if kid is None:
        return [key.secret for key in keys]
    named = [key.secret for key in keys if key.kid == kid]
    if not named:
        raise _unauthorized("token signature is invalid: its key (kid) is unknown or retired")
    return named


def decode_token(settings: Settings, token: str) -> dict[str, Any]:
    try:
        candidates = _candidate_keys(settings, token)
        for key in candidates[:-1]:
            try:
                return _decode(settings, token, key)
            except jwt.InvalidSignatureError:
                continue
        return _decode(settings, token, candidates[-1])
    except jwt.ExpiredSignatureError as exc:
        raise _unauthorized("token expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise _unauthorized("token audience is not this API") from exc
    except jwt.InvalidIssuerError as exc:
        raise _unauthorized("token issuer is not trusted") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise _unauthorized(f"token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidSignatureError as exc:
        raise _unauthorized("token signature is invalid") from exc
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(f"token is malformed: {exc}") from exc


def _decode(settings: Settings, token: str, key: str) -> dict[str, Any]:
    return jwt.decode(
        token,
        key,
        algorithms=[settings.jwt_algorithm],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        options={"require": ["exp", "iss", "aud", "sub"]},
    )


def require_scope(scope: str) -> Callable[..., Coroutine[Any, Any, dict[str, Any]]]:
    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> dict[str, Any]:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="this operation needs an 'Authorization: Bearer <token>' header",
                headers={"WWW-Authenticate": "Bearer"},
            )
        claims = decode_token(settings_of(request), credentials.credentials)
        if scope not in str(claims.get("scope", "")).split():
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail=f"token lacks the {scope!r} scope"
            )
        return claims

    return dependency


require_writer = require_scope(WRITE_SCOPE)
