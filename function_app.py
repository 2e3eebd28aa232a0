"""Azure Functions (Python v2 programming model): the same FastAPI app, settings module and all,
as one HTTP function taking every path; host.json's empty route prefix keeps /items at /items.

Anonymous at the function level: the app checks its own bearer tokens, and a function key would
close the public reads. The lifespan (engine, Redis, job queue client) starts with the first
request of each instance and lasts as long as it; the instance is not frozen between requests,
so DB_POOL_MODE=pooled (the default) holds. azure-functions comes from the `azure` group.
"""

from __future__ import annotations

import azure.functions as func

from api.main import app as api

app = func.AsgiFunctionApp(app=api, http_auth_level=func.AuthLevel.ANONYMOUS)
