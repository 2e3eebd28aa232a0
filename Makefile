# Every operator action. `make` (or `make help`) lists them. Needs Docker with Compose v2 and
# make; targets marked (uv) also need uv (https://docs.astral.sh/uv/).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

COMPOSE ?= docker compose
PROD := $(COMPOSE) -f compose.yaml -f compose.prod.yaml
DEV := $(COMPOSE) -f compose.yaml -f compose.dev.yaml
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

.PHONY: dev
dev: ## Development mode: the stack with reloading api and worker, debugger on 127.0.0.1:5678
	$(DEV) watch

.PHONY: dev-migrate
dev-migrate: ## In development mode: apply this checkout's migrations (after make revision), no restart
	$(DEV) run --rm migrate

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

.PHONY: pull
pull: ## Pull the images the stack runs and does not build, every profile's too (a fresh CI runner)
	$(COMPOSE) --profile observability --profile grafana pull --ignore-buildable

.PHONY: migrate
migrate: ## Run the database migrations (the one-shot migrate service)
	$(COMPOSE) run --rm migrate

# Autogenerate compares the models with the stack's database, which only the app's network
# reaches: Alembic runs in the migrate image, with this checkout's models (core/, read-only) and
# migrations (where the new file is written) mounted, as you, so the file is yours. --build: the
# image make dev runs is another tag, so this one may be older than the checkout's code.
.PHONY: revision
revision: ## New migration from the models, against the running stack: make revision MESSAGE="add x"
	@test -n "$(MESSAGE)" || { echo 'usage: make revision MESSAGE="add price index" (with the stack up: make up)' >&2; exit 2; }
	@test -n "$$($(COMPOSE) ps -q --status running db)" || { echo "make revision needs the stack's database: make up first" >&2; exit 1; }
	$(COMPOSE) run --rm --no-deps --build --user "$$(id -u):$$(id -g)" \
		-v "$(CURDIR)/core:/app/core:ro" -v "$(CURDIR)/api/migrations:/app/api/migrations" \
		migrate alembic revision --autogenerate -m "$(MESSAGE)"

.PHONY: schedules
schedules: ## Each schedule (worker/schedules.py): its rule, last run and status, next run
	@$(COMPOSE) exec -T worker python -m worker.schedules_report

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

# The tier is the folder: tests/e2e/full/ is marked `full` (tests/conftest.py), and only
# test-all runs it.
.PHONY: test
test: ## Before a commit: unit, static, integration and the stack's e2e checks (uv)
	uv run --frozen pytest -m "not full"

.PHONY: test-all
test-all: ## Everything CI runs: make test, then chaos, security, deploy, backups, Swarm... (uv)
	uv run --frozen pytest

.PHONY: test-fast
test-fast: ## Unit and static tests only, no containers (uv)
	uv run --frozen pytest tests/unit tests/static

# wrk is the benchmarks' load generator; Debian packages it.
NEEDS_WRK = @command -v wrk >/dev/null || { echo "make $@ needs wrk (apt-get install wrk)" >&2; exit 1; }

.PHONY: bench
bench: ## Kit vs tutorial, template peer and bare ASGI: rounds, CPU/request, goals (~17 min) [BENCH_ROUNDS= BENCH_SECONDS= BENCH_ROWS= BENCH_PHASES=] (wrk, uv)
	$(NEEDS_WRK)
	uv run --frozen python -m bench.run

.PHONY: bench-publish
bench-publish: ## make bench on a clean checkout, also writing docs/benchmarks.md and docs/bench-results/bench.json (a quiet machine)
	$(NEEDS_WRK)
	BENCH_PUBLISH=1 uv run --frozen python -m bench.run

.PHONY: coldstart
coldstart: ## Container start to first answer: gunicorn, Cloud Run mode, Lambda init [BASELINE=<git ref>] (uv)
	uv run --frozen python -m bench.coldstart

.PHONY: bench-backups
bench-backups: ## Archive lag, backup and restore time of a 1 GB database, repository size (~10 min; uv)
	uv run --frozen python -m bench.backups

.PHONY: bench-compare
bench-compare: ## Two api builds or settings, alternating on one stack: A=<tag> B=<tag> [A_ENV= B_ENV=]
	$(NEEDS_WRK)
	uv run --frozen python -m bench.compare

.PHONY: bench-instructions
bench-instructions: ## What tracing costs the api in instructions per cached read, off / default ratio / 1: no VM noise (~6 min; valgrind, uv)
	uv run --frozen python -m bench.instructions

.PHONY: bench-observability
bench-observability: ## What the observability profile costs: api throughput with/without scrapes, Prometheus disk per day (~4 min; wrk, uv)
	$(NEEDS_WRK)
	uv run --frozen python -m bench.observability

# The pre-commit hooks (.pre-commit-config.yaml) run these steps but lint-alerts, before each
# commit; tests/static/test_repository.py holds the two lists together.
.PHONY: lint
lint: ## ruff, mypy (strict), hadolint, shellcheck, large files, migration lint, schema checks (uv); alert rules (Docker)
	uv run --frozen ruff check .
	uv run --frozen ruff format --check .
	uv run --frozen mypy
	uv run --frozen hadolint Dockerfile db/Dockerfile tests/backup_host/Dockerfile bench/peer/Dockerfile
	uv run --frozen shellcheck .ci/run .ci/large-files.sh deploy/*.sh deploy/swarm/*.sh db/*.sh db/bin/* tests/backup_host/*.sh
	.ci/large-files.sh
	uv run --frozen python -m api.migration_lint
	uv run --frozen pytest -q tests/static
	$(MAKE) --no-print-directory lint-alerts

# The one lint step that needs Docker: promtool from the Prometheus image the stack runs (none is
# on PyPI), checking the configuration and rules and running every rule's unit tests
# (observability/tests/). `make lint` runs it last.
PROMETHEUS_IMAGE ?= prom/prometheus:v3.1.0
.PHONY: lint-alerts
lint-alerts: ## promtool check config + test rules for every alert rule, in Docker (make lint runs it)
	docker run --rm --network none --entrypoint /bin/promtool \
		-v "$(CURDIR)/observability:/etc/prometheus:ro" -w /etc/prometheus \
		$(PROMETHEUS_IMAGE) check config --syntax-only /etc/prometheus/prometheus.yml
	docker run --rm --network none --entrypoint /bin/promtool \
		-v "$(CURDIR)/observability:/etc/prometheus:ro" -w /etc/prometheus \
		$(PROMETHEUS_IMAGE) test rules $(sort $(patsubst observability/%,%,$(wildcard observability/tests/*.test.yml)))

.PHONY: backup
backup: ## pgBackRest backup of the local stack's database now (TYPE=full|diff|incr, default incr)
	$(COMPOSE) exec -T --user postgres db pgbackrest backup --type=$(or $(TYPE),incr)

.PHONY: backups
backups: ## List the backups and the archived WAL range in the pgBackRest repository
	$(COMPOSE) exec -T --user postgres db pgbackrest info

.PHONY: restore
restore: ## Point-in-time restore: make restore [TIME="2026-11-22 14:03:00+00"|POINT=name] [YES=1]; FILE=x.dump: a pg_dump
ifeq ($(FILE),)
	COMPOSE="$(COMPOSE)" TIME="$(TIME)" POINT="$(POINT)" TIMELINE="$(TIMELINE)" YES="$(YES)" db/restore.sh
else
	$(COMPOSE) exec -T db sh -c 'pg_restore --clean --if-exists --no-owner --single-transaction -U "$$POSTGRES_USER" -d "$$POSTGRES_DB"' < "$(FILE)"
	@# The item cache describes the data before the restore: empty it (db 0; the job queue is db 1).
	@# Production's password is a secret file (compose.prod.yaml), read into REDISCLI_AUTH: not argv.
	$(COMPOSE) exec -T redis sh -c 'if [ -f /run/secrets/redis_password ]; then REDISCLI_AUTH=$$(cat /run/secrets/redis_password); export REDISCLI_AUTH; fi; redis-cli -n 0 FLUSHDB'
endif

.PHONY: dump
dump: ## pg_dump of the local stack's database to backups/ (FILE= to choose the name), for make restore FILE=
	@mkdir -p backups
	$(COMPOSE) exec -T db sh -c 'pg_dump -U "$$POSTGRES_USER" -Fc "$$POSTGRES_DB"' > $(or $(FILE),backups/$(shell date -u +%Y%m%dT%H%M%SZ).dump)
	@echo "dump written: $(or $(FILE),backups/)"

.PHONY: backup-fetch
backup-fetch: ## After losing the server's disk: copy the off-host repository back (then make restore)
	$(COMPOSE) run --rm --no-deps -T --entrypoint kit-backup-offhost backup fetch

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
deploy-backup: ## A restore point in the server's WAL archive now (make restore POINT=<name> there)
	deploy/deploy.sh backup

# ---- secret rotation (docs/secrets.md) ----------------------------------------------------
# This host's production stack: the overlay, unless COMPOSE names the stack itself.
ROTATE_COMPOSE = $(if $(filter file,$(origin COMPOSE)),$(PROD),$(COMPOSE))
.PHONY: rotate-secret
rotate-secret: ## New value for a secret, no failed request: make rotate-secret NAME=jwt_secret|postgres_app_password|redis_password
	COMPOSE="$(ROTATE_COMPOSE)" deploy/rotate-secret.sh "$(NAME)"

.PHONY: deploy-rotate-secret
deploy-rotate-secret: ## The same on the server in deploy.env; the new value comes back into DEPLOY_SECRETS_DIR
	deploy/deploy.sh rotate-secret "$(NAME)"

# ---- Docker Swarm (docs/swarm.md) ----------------------------------------------------------
.PHONY: swarm-deploy
swarm-deploy: ## Deploy HEAD to the swarm in deploy.env: migrations once, rolling update, rolls back on failure
	deploy/swarm/deploy.sh deploy

.PHONY: swarm-rollback
swarm-rollback: ## The swarm runs the previous release again, or RELEASE=<name>
	deploy/swarm/deploy.sh rollback $(RELEASE)

.PHONY: swarm-status
swarm-status: ## The swarm's nodes, the stack's services and where each task runs
	@deploy/swarm/deploy.sh status

.PHONY: swarm-log
swarm-log: ## Show the swarm's deploy log (who, when, release, result)
	@deploy/swarm/deploy.sh log

.PHONY: swarm-config
STACK ?= fastapi-kit
swarm-config: ## Print the stack file this checkout and .env make for the swarm (STACK=fastapi-kit)
	@$(PROD) -p $(STACK) -f compose.swarm.yaml config --format json | python3 deploy/swarm/render.py --stack $(STACK)

.PHONY: test-swarm
test-swarm: ## The Swarm test alone: a three-node swarm (swarm-nodes), deploy, rolling update, drain, node loss (~10 min; uv)
	uv run --frozen pytest tests/e2e/full/test_swarm.py

.PHONY: prod-config
prod-config: ## Check the production overlay against your .env and secret files (names what is missing)
	$(PROD) config --quiet
	@$(PROD) config | awk '/^secrets:/ {s = 1} s && $$1 == "file:" {print $$2}' | while read -r file; do \
		case "$$file" in */alertmanager_*) test -e "$$file" && continue;; esac; \
		test -s "$$file" || { echo "missing or empty secret file: $$file (make secrets; make observability-secrets)" >&2; exit 1; }; \
	done
	@echo "production configuration is complete"

# ---- profile `observability` (docs/observability.md) --------------------------------------
TUNNEL_HOST ?= $(DEPLOY_HOST)
PROMETHEUS_PORT ?= 9090
ALERTMANAGER_PORT ?= 9093
GRAFANA_PORT ?= 3000
JAEGER_PORT ?= 16686

.PHONY: observability-up
observability-up: ## Start the stack with Prometheus, Alertmanager and the exporters (profile observability)
	$(COMPOSE) --profile observability up -d --build --wait

# Prometheus and Alertmanager listen on the server's loopback only: forward them over SSH.
.PHONY: tunnel
tunnel: ## SSH tunnel to the server's Prometheus, Alertmanager, Jaeger and Grafana: make tunnel TUNNEL_HOST=user@server
	@test -n "$(TUNNEL_HOST)" || { echo "usage: make tunnel TUNNEL_HOST=user@server (or DEPLOY_HOST set)" >&2; exit 2; }
	@echo "Prometheus http://127.0.0.1:$(PROMETHEUS_PORT)  Alertmanager http://127.0.0.1:$(ALERTMANAGER_PORT)  Jaeger http://127.0.0.1:$(JAEGER_PORT)  Grafana (profile grafana) http://127.0.0.1:$(GRAFANA_PORT)  (Ctrl-C closes)"
	ssh -N -L $(PROMETHEUS_PORT):127.0.0.1:$(PROMETHEUS_PORT) -L $(ALERTMANAGER_PORT):127.0.0.1:$(ALERTMANAGER_PORT) \
		-L $(JAEGER_PORT):127.0.0.1:$(JAEGER_PORT) -L $(GRAFANA_PORT):127.0.0.1:$(GRAFANA_PORT) $(TUNNEL_HOST)

# Alertmanager's two files may stay empty (that receiver unused); the exporter's map is derived
# from redis_password, so run this again after changing that.
.PHONY: observability-secrets
observability-secrets: ## Create the profiles' secret files in SECRETS_DIR: Alertmanager's (empty), Grafana's, the Redis exporter's
	@test -s "$(SECRETS_DIR)/redis_password" || { echo "$(SECRETS_DIR)/redis_password missing: make secrets first" >&2; exit 1; }
	@umask 077; for name in alertmanager_webhook_url alertmanager_smtp_password; do \
		test -e "$(SECRETS_DIR)/$$name" || { : > "$(SECRETS_DIR)/$$name"; chmod 0444 "$(SECRETS_DIR)/$$name"; echo "created $(SECRETS_DIR)/$$name (empty: write the value into it)"; }; \
	done
	@umask 077; test -e "$(SECRETS_DIR)/grafana_admin_password" || { \
		od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$(SECRETS_DIR)/grafana_admin_password"; \
		chmod 0444 "$(SECRETS_DIR)/grafana_admin_password"; echo "created $(SECRETS_DIR)/grafana_admin_password"; }
	@umask 077; map="$(SECRETS_DIR)/redis_exporter_password_map"; rm -f "$$map.new"; \
		printf '{"redis://redis:6379": "%s"}' "$$(cat "$(SECRETS_DIR)/redis_password")" > "$$map.new"; \
		chmod 0444 "$$map.new"; mv -f "$$map.new" "$$map"; echo "wrote $$map"
