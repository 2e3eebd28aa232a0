"""JSON logs on stdout, one object a line, each carrying the request id of the request it is for,
and while tracing is on the trace and span ids it was written under (core/tracing.py)."""

from __future__ import annotations

import logging
import logging.config
from contextvars import ContextVar
from typing import Any

from core.tracing import current_ids

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        ids = current_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        # Google Cloud Logging (Cloud Run) reads a line's level from `severity`, and its names
        # are Python's (DEBUG, INFO, WARNING, ERROR, CRITICAL).
        record.severity = record.levelname
        return True


def logging_config(level: str) -> dict[str, Any]:
    """A dictConfig shared by the app and gunicorn's own loggers (api/gunicorn_conf.py)."""
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
        "formatter": "json",
        "filters": ["request_id"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(severity)s %(name)s %(message)s %(process)d",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
        },
        "handlers": {"stdout": handler},
        "root": {"handlers": ["stdout"], "level": level.upper()},
        "loggers": {
            # Requests are logged once, by api.middleware, with the request id.
            "uvicorn.access": {"handlers": [], "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "gunicorn.error": {"handlers": ["stdout"], "level": level.upper(), "propagate": False},
            "gunicorn.access": {"handlers": [], "propagate": False},
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }


def configure_logging(level: str) -> None:
    logging.config.dictConfig(logging_config(level))
