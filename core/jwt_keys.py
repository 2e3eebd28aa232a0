"""The keys that sign and verify the api's tokens, read from JWT_SECRET (its file in production).

JWT_SECRET is either one plain value, the only key, or a keyring that `make rotate-secret
NAME=jwt_secret` writes (docs/secrets.md): a first line starting with KEYRING_HEADER, then one key
a line. The first key signs; every key verifies, except that a key written as `until=<UNIX time>
<key>` (retired by a rotation) verifies only until then. Blank lines and `#` lines are comments.

A key's id, the `kid` header of the tokens it signs, is derived from the key (SHA-256, 16 hex
digits): the file holds keys only, and a token names its key without revealing it (its signature
already lets anyone test a guess of the key, the id adds nothing to that).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property

KEYRING_HEADER = "# jwt keyring"
_RETIRED = re.compile(r"until=(\d+) (.+)")


@dataclass(frozen=True)
class JwtKey:
    secret: str = field(repr=False)
    # The UNIX time from which it no longer verifies; None: it verifies until a rotation retires it.
    until: int | None = None

    @cached_property
    def kid(self) -> str:
        return hashlib.sha256(self.secret.encode()).hexdigest()[:16]

    def verifies_at(self, now: float) -> bool:
        return self.until is None or now < self.until


def parse_keys(text: str) -> list[JwtKey]:
    """The keys, the signing one first. A ValueError says what is wrong, never quoting a key."""
    if not text.startswith(KEYRING_HEADER):
        return [JwtKey(text)]
    keys: list[JwtKey] = []
    for number, line in enumerate(text.splitlines()[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        retired = _RETIRED.fullmatch(line)
        if retired:
            keys.append(JwtKey(retired.group(2), int(retired.group(1))))
        elif line.startswith("until="):
            raise ValueError(f"line {number} of the keyring: write until=<UNIX time> <key>")
        else:
            keys.append(JwtKey(line))
    if not keys:
        raise ValueError("the keyring holds no key")
    if keys[0].until is not None:
        raise ValueError("the keyring's first key signs, so it cannot be retired (until=)")
    return keys
