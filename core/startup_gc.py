"""What a process made while starting (imports, clients, the tracing SDK) lives as long as the
process: frozen out of the cyclic collector's sight, so that each full collection does not walk
it again (the api's 150,000, 20,000 of them tracing's: docs/observability.md, Sampling)."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Called once a process is ready to serve, after the fork where there is one. No collection
    first: startup leaves a few hundred objects of garbage, and collecting them would add about
    70 ms to a Lambda's cold start. Never thawed: in a gunicorn worker that would bring back the
    master's objects too, and a collection then would copy every page shared with it."""
    gc.freeze()
