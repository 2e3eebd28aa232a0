"""The example CPU-heavy job: iterated SHA-256. Deterministic, and its cost is linear in rounds."""

from __future__ import annotations

import hashlib


def iterated_sha256(seed: str, rounds: int) -> str:
    digest = seed.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()
