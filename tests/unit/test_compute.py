import hashlib

from worker.compute import iterated_sha256


def test_matches_hashlib_by_hand():
    digest = b"seed"
    for _ in range(3):
        digest = hashlib.sha256(digest).digest()
    assert iterated_sha256("seed", 3) == digest.hex()


def test_deterministic_and_seed_sensitive():
    assert iterated_sha256("a", 1000) == iterated_sha256("a", 1000)
    assert iterated_sha256("a", 1000) != iterated_sha256("b", 1000)
    assert iterated_sha256("a", 1000) != iterated_sha256("a", 1001)
