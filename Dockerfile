# One image, three targets: `api` (gunicorn + Uvicorn workers; also runs migrations), `worker`
# (Celery) and `lambda` (the api for AWS Lambda: `docker build --target lambda .`). Dependencies are installed before the code is copied, so a code-only change rebuilds
# in seconds. `api-dev` and `worker-dev` are `make dev`'s (compose.dev.yaml), never production's.

FROM ghcr.io/astral-sh/uv:0.9.5 AS uv

# ---- build: resolve the locked dependencies into /venv --------------------------------------
FROM python:3.12-slim AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/venv
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project

# ---- build-lambda: AWS's runtime interface client, locked (the `lambda` dependency group) -----
FROM build AS build-lambda
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv export --frozen --only-group lambda --no-emit-project --output-file /tmp/lambda.txt \
    && uv pip install --python /venv/bin/python --target /opt/lambda --require-hashes \
        -r /tmp/lambda.txt

# ---- build-debug: the debugger of the api-dev stage, locked (the `debug` dependency group) -----
FROM build AS build-debug
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv export --frozen --only-group debug --no-emit-project --output-file /tmp/debug.txt \
    && uv pip install --python /venv/bin/python --target /opt/debug --require-hashes \
        -r /tmp/debug.txt

# ---- runtime: the virtualenv and the code, nothing else -------------------------------------
FROM python:3.12-slim AS runtime
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app
ENV PATH=/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY --from=build /venv /venv
COPY alembic.ini ./
COPY core ./core
COPY api ./api
COPY worker ./worker
RUN python -m compileall -q core api worker
# Numeric, so Kubernetes-style runAsNonRoot checks and host tools can resolve it.
USER 10001:10001

FROM runtime AS worker
# Each Celery process writes its metrics here; the main process's endpoint merges them
# (worker/metrics.py).
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/worker-metrics
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "worker.healthcheck"]
# Celery itself is PID 1 (no shell): SIGTERM reaches it and starts a warm shutdown.
CMD ["celery", "--app=worker.app", "worker", "--loglevel=INFO", "--without-gossip", "--without-mingle"]

# `make dev`'s worker: the same process, its code mounted read-only from the checkout
# (compose.dev.yaml); Compose's watch restarts it on a change (SIGTERM: Celery's warm shutdown).
FROM worker AS worker-dev

# The api as an AWS Lambda function (api/lambda_handler.py), through the runtime interface client.
# A frozen execution environment must not keep pooled connections: one per request (or RDS Proxy
# and DB_POOL_MODE=pooled). One process: metrics in memory (no PROMETHEUS_MULTIPROC_DIR, which
# only the api target sets).
FROM runtime AS lambda
COPY --from=build-lambda /opt/lambda /opt/lambda
ENV PYTHONPATH=/app:/opt/lambda \
    DB_POOL_MODE=per-request
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "awslambdaric"]
CMD ["api.lambda_handler.handler"]

# `make dev`'s api: gunicorn with the production settings plus a reloader (dev/gunicorn_conf.py),
# under debugpy (attach on port 5678). api/ and core/ are mounted read-only from the checkout.
FROM runtime AS api-dev
COPY --from=build-debug /opt/debug /opt/debug
COPY dev ./dev
ENV PYTHONPATH=/app:/opt/debug
EXPOSE 8000 5678
CMD ["python", "-Xfrozen_modules=off", "-m", "debugpy", "--listen", "0.0.0.0:5678", \
     "-m", "gunicorn", "--config=python:dev.gunicorn_conf", "api.main:app"]

# Last, so a plain `docker build .` gives the api.
FROM runtime AS api
# Each gunicorn worker writes its metrics here; /metrics merges them (api/metrics.py).
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/metrics
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "api.healthcheck"]
CMD ["gunicorn", "--config=python:api.gunicorn_conf", "api.main:app"]
