"""Error reports to a Sentry-compatible endpoint (SENTRY_DSN, a secret file), off unless it is set.

An unhandled exception of a request (api/errors.py) or a job (worker/app.py) is sent once, with
the release, the environment, and the request id and trace id as tags, so a report leads to the
log lines and to the trace. Started per process after the fork: the SDK sends from a thread.
Nothing else of the SDK runs (no integrations, no tracing of its own: OpenTelemetry does that),
and every event passes `scrub` first: no local variables, no credentials, no secret-looking value.
"""

from __future__ import annotations

import re
from typing import Any

from core.logs import request_id_var
from core.settings import Settings
from core.tracing import current_ids

_started = False

# Keys whose values never leave the process, at any depth of an event (Sentry's list, and ours).
_SECRET_KEY = re.compile(
    r"pass|secret|token|auth|cookie|session|csrf|api[-_]?key|private|credential|dsn|signature",
    re.IGNORECASE,
)
# Values that are credentials whatever their key: a bearer token or JWT, a URL's password.
_SECRET_VALUES = (
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer [Filtered]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[Filtered]"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@/\s]+@"), r"\1[Filtered]@"),
)
FILTERED = "[Filtered]"


def start_error_reports(settings: Settings, service: str) -> bool:
    global _started
    if settings.sentry_dsn is None or _started:
        return _started
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        release=settings.release,
        environment=settings.environment,
        server_name=service,
        default_integrations=False,
        auto_enabling_integrations=False,
        include_local_variables=False,
        send_default_pii=False,
        before_send=scrub,
    )
    sentry_sdk.set_tag("service", service)
    _started = True
    return True


def stop_error_reports() -> None:
    """Sends what is queued (a stopping process)."""
    if _started:
        import sentry_sdk

        sentry_sdk.flush(timeout=2)


def report(exc: BaseException, **context: str | None) -> None:
    """One report of exc, tagged with the request id and trace id in effect (if any)."""
    if not _started:
        return
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tag("request_id", request_id_var.get())
        ids = current_ids()
        if ids is not None:
            scope.set_tag("trace_id", ids[0])
            scope.set_context("trace", {"trace_id": ids[0], "span_id": ids[1]})
        for name, value in context.items():
            scope.set_tag(name, value)
        sentry_sdk.capture_exception(exc)


def scrub(event: Any, hint: Any = None) -> Any:
    """The event with every secret-named key's value and every credential-looking string
    replaced by [Filtered]."""
    return _scrub(event)


def _scrub(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEY.search(key) and value not in (None, "", [], {}):
        return FILTERED
    if isinstance(value, dict):
        return {k: _scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # Header lists are [name, value] pairs: the name decides.
        if len(value) == 2 and isinstance(value[0], str) and _SECRET_KEY.search(value[0]):
            return [value[0], FILTERED]
        return [_scrub(item) for item in value]
    if isinstance(value, str):
        for pattern, replacement in _SECRET_VALUES:
            value = pattern.sub(replacement, value)
    return value
