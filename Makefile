# Every operator action. `make` (or `make help`) lists them. Needs Docker with Compose v2 and
# make; targets marked (uv) also need uv (https://docs.astral.sh/uv/).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

COMPOSE ?= docker compose
PROD := $(COMPOSE) -f compose.yaml -f compose.prod.yaml
SERVICE ?= api
REPLICAS ?= 3
SUBJECT ?= $(USER)
SECRETS_DIR ?= secrets

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: up
up: ## Build and start the stack, wait until every service is healthy (https://api.localhost)
	$(COMPOSE) up -d --build --wait

.PHONY: down
down: ## Stop the stack (data volumes are kept)
	$(COMPOSE) down

.PHONY: clean
clean: ## Stop the stack and delete its volumes (database, Redis, certificates)
	$(COMPOSE) down -v --remove-orphans

.PHONY: logs
logs: ## Follow the logs (SERVICE=api by default; SERVICE= for all)
	$(COMPOSE) logs -f --tail=100 $(SERVICE)

.PHONY: ps
ps: ## Show the services and their health
	$(COMPOSE) ps -a

.PHONY: build
build: ## Build the api and worker images
	$(COMPOSE) build

.PHONY: migrate
migrate: ## Run the database migrations (the one-shot migrate service)
	$(COMPOSE) run --rm migrate

# Autogenerate compares the models with the stack's database, which only the app's network
# reaches: Alembic runs in the migrate image, with this checkout's models (core/, read-only) and
# migrations (where the new file is written) mounted, as you, so the file is yours.
.PHONY: revision
revision: ## New migration from the models, against the running stack: make revision MESSAGE="add x"
	@test -n "$(MESSAGE)" || { echo 'usage: make revision MESSAGE="add price index" (with the stack up: make up)' >&2; exit 2; }
	@test -n "$$($(COMPOSE) ps -q --status running db)" || { echo "make revision needs the stack's database: make up first" >&2; exit 1; }
	$(COMPOSE) run --rm --no-deps --user "$$(id -u):$$(id -g)" \
		-v "$(CURDIR)/core:/app/core:ro" -v "$(CURDIR)/api/migrations:/app/api/migrations" \
		migrate alembic revision --autogenerate -m "$(MESSAGE)"

.PHONY: shell
shell: ## Open a shell in a service (SERVICE=api by default)
	$(COMPOSE) exec $(SERVICE) bash

.PHONY: psql
psql: ## Open psql on the database
	$(COMPOSE) exec db sh -c 'psql -U "$$POSTGRES_USER" "$$POSTGRES_DB"'

.PHONY: token
token: ## Print a bearer token for writes: make token SUBJECT=alice
	@$(COMPOSE) exec -T api python -m api.token "$(SUBJECT)"

.PHONY: scale
scale: ## Run REPLICAS api containers behind Traefik: make scale REPLICAS=3
	$(COMPOSE) up -d --wait --no-recreate --scale api=$(REPLICAS) api

.PHONY: test
test: ## Unit, integration and end-to-end tests against a real stack (uv)
	uv run --frozen pytest

.PHONY: test-fast
test-fast: ## Unit and static tests only, no containers (uv)
	uv run --frozen pytest tests/unit tests/static

# wrk is the benchmarks' load generator; Debian packages it.
NEEDS_WRK = @command -v wrk >/dev/null || { echo "make $@ needs wrk (apt-get install wrk)" >&2; exit 1; }

.PHONY: bench
bench: ## Kit vs tutorial, template peer and bare ASGI: rounds, CPU/request, goals (~12 min) [BENCH_ROUNDS= BENCH_SECONDS= BENCH_ROWS= BENCH_PHASES=] (wrk, uv)
	$(NEEDS_WRK)
	uv run --frozen python -m bench.run

.PHONY: bench-publish
bench-publish: ## make bench on a clean checkout, also writing docs/benchmarks.md and docs/bench-results/bench.json (a quiet machine)
	$(NEEDS_WRK)
	BENCH_PUBLISH=1 uv run --frozen python -m bench.run

.PHONY: coldstart
coldstart: ## Container start to first answer: gunicorn, Cloud Run mode, Lambda init [BASELINE=<git ref>] (uv)
	uv run --frozen python -m bench.coldstart

.PHONY: bench-compare
bench-compare: ## Two api builds or settings, alternating on one stack: A=<tag> B=<tag> [A_ENV= B_ENV=]
	$(NEEDS_WRK)
	uv run --frozen python -m bench.compare

.PHONY: lint
lint: ## ruff, mypy (strict), hadolint, shellcheck and the compose/Traefik schema checks (uv)
	uv run --frozen ruff check .
	uv run --frozen ruff format --check .
	uv run --frozen mypy
	uv run --frozen hadolint Dockerfile bench/peer/Dockerfile
	uv run --frozen shellcheck .ci/run deploy/*.sh
	uv run --frozen pytest -q tests/static

.PHONY: backup
backup: ## pg_dump of the local stack's database to backups/ (FILE= to choose the name)
	@mkdir -p backups
	$(COMPOSE) exec -T db sh -c 'pg_dump -U "$$POSTGRES_USER" -Fc "$$POSTGRES_DB"' > $(or $(FILE),backups/$(shell date -u +%Y%m%dT%H%M%SZ).dump)
	@echo "backup written: $(or $(FILE),backups/)"

.PHONY: restore
restore: ## Restore a backup into the local stack's database: make restore FILE=backups/x.dump
	@test -n "$(FILE)" || { echo "usage: make restore FILE=backups/<name>.dump" >&2; exit 2; }
	$(COMPOSE) exec -T db sh -c 'pg_restore --clean --if-exists --no-owner --single-transaction -U "$$POSTGRES_USER" -d "$$POSTGRES_DB"' < "$(FILE)"
	@# The item cache describes the data before the restore: empty it (db 0; the job queue is db 1).
	@# Production's password is a secret file (compose.prod.yaml), read into REDISCLI_AUTH: not argv.
	$(COMPOSE) exec -T redis sh -c 'if [ -f /run/secrets/redis_password ]; then REDISCLI_AUTH=$$(cat /run/secrets/redis_password); export REDISCLI_AUTH; fi; redis-cli -n 0 FLUSHDB'

.PHONY: secrets
secrets: ## Create the missing production secret files in SECRETS_DIR (./secrets); never overwrites
	deploy/secrets.sh "$(SECRETS_DIR)"

.PHONY: deploy
deploy: ## Deploy HEAD to the server in deploy.env: zero downtime, health-gated, rolls back on failure
	deploy/deploy.sh deploy

.PHONY: rollback
rollback: ## Roll the server back to the previous release, or RELEASE=<name>
	deploy/deploy.sh rollback $(RELEASE)

.PHONY: deploy-log
deploy-log: ## Show the server's deploy log (who, when, release, result)
	@deploy/deploy.sh log

.PHONY: deploy-unlock
deploy-unlock: ## Break a stale deploy lock on the server (only if no deploy is running!)
	deploy/deploy.sh unlock

.PHONY: deploy-trust
deploy-trust: ## Pin the server's SSH host key (shows its fingerprints; YES=1 pins without asking)
	YES=$(YES) deploy/deploy.sh trust

.PHONY: deploy-backup
deploy-backup: ## pg_dump of the server's database, kept on the server under backups/
	deploy/deploy.sh backup

.PHONY: prod-config
prod-config: ## Check the production overlay against your .env and secret files (names what is missing)
	$(PROD) config --quiet
	@$(PROD) config | awk '/^secrets:/ {s = 1} s && $$1 == "file:" {print $$2}' | while read -r file; do \
		test -s "$$file" || { echo "missing or empty secret file: $$file (make secrets)" >&2; exit 1; }; \
	done
	@echo "production configuration is complete"
