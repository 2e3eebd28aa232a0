"""Request headers that carry a token, as `make token` gives a user."""

from __future__ import annotations

from api.auth import WRITE_SCOPE, issue_token
from core.settings import Settings

# Request headers, as the `auth` fixture gives them.
Headers = dict[str, str]


def auth_headers(settings: Settings, subject: str) -> Headers:
    """An Authorization header with a write-scoped token for subject, signed with settings' key:
    the key of the app or stack the requests go to."""
    return {"Authorization": f"Bearer {issue_token(settings, subject, [WRITE_SCOPE])}"}
