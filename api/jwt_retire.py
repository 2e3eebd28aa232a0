"""`python -m api.jwt_retire`: print the seconds a JWT key retired now keeps verifying.

`make rotate-secret NAME=jwt_secret` (deploy/rotate-lib.sh) asks the running api, so the figure
comes from the api's own settings: JWT_TTL_SECONDS plus JWT_ROLLOUT_SECONDS.
"""

from __future__ import annotations

from core.settings import get_settings


def main() -> None:
    print(get_settings().jwt_retired_key_seconds)


if __name__ == "__main__":
    main()
