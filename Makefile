# The one entry point for humans and CI. `make run` for the embedded default (SQLite, eager
# Celery, local cache, fake payments); `make test` for the whole suite on PostgreSQL and Redis.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
HOST ?= 127.0.0.1
PORT ?= 8000

PG_URL ?= postgres://gateway_billing:gateway_billing@127.0.0.1:5432/gateway_billing
PG_ADMIN_URL ?= postgres://postgres@127.0.0.1:5432/postgres
REDIS_BASE ?= redis://127.0.0.1:6379
REDIS_TEST_URL ?= $(REDIS_BASE)/15

SERVE_ENV := DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS_BASE)/0 CELERY_BROKER_URL=$(REDIS_BASE)/1

.PHONY: install run test lint format serve bench clean db vendor chromium chaos soak

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	DEBUG=true $(PY) manage.py migrate --noinput
	DEBUG=true $(PY) manage.py loadcatalog
	DEBUG=true $(PY) manage.py demo_setup
	DEBUG=true $(PY) manage.py runserver $(HOST):$(PORT)

# Front-end assets from npm (exact pins in package.json / package-lock.json), copied into
# static/vendor/ and committed, so `make run` works offline and no page loads from a CDN.
VENDOR := static/vendor
vendor:
	npm ci --ignore-scripts --no-audit --no-fund
	mkdir -p $(VENDOR)
	cp node_modules/chart.js/dist/chart.umd.min.js $(VENDOR)/chart.umd.min.js
	cp node_modules/chart.js/LICENSE.md $(VENDOR)/chart.js.LICENSE.md
	cp node_modules/@kurkle/color/LICENSE.md $(VENDOR)/kurkle-color.LICENSE.md
	cp node_modules/htmx.org/dist/htmx.min.js $(VENDOR)/htmx.min.js
	cp node_modules/htmx.org/LICENSE $(VENDOR)/htmx.LICENSE

# The browser tests drive Debian's Chromium (`playwright install` cannot download here).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# Creates the role and database the suite needs (when the local server lets the admin in).
db: install
	$(PY) scripts/ensure_db.py --admin-url "$(PG_ADMIN_URL)" --url "$(PG_URL)"

test: install db chromium
	DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS_TEST_URL) $(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=true $(PY) manage.py makemigrations --check --dry-run

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The production shape: gunicorn + Celery worker + beat on PostgreSQL and Redis.
serve: install db
	$(SERVE_ENV) DEBUG=false SECRET_KEY=$${SECRET_KEY:-serve-local-only} $(PY) manage.py migrate --noinput
	$(SERVE_ENV) DEBUG=false SECRET_KEY=$${SECRET_KEY:-serve-local-only} $(PY) manage.py collectstatic --noinput -v0
	$(SERVE_ENV) DEBUG=false SECRET_KEY=$${SECRET_KEY:-serve-local-only} $(PY) manage.py loadcatalog
	$(SERVE_ENV) DEBUG=false SECRET_KEY=$${SECRET_KEY:-serve-local-only} ALLOWED_HOSTS=127.0.0.1,localhost \
		bash scripts/serve.sh $(HOST) $(PORT)

clean:
	rm -rf $(VENV) staticfiles db.sqlite3

# Ingest (and later authorize) figures against gunicorn on PostgreSQL; needs wrk.
bench: install db
	command -v wrk >/dev/null || apt-get install -y wrk
	$(PY) bench/run.py $(BENCH_ARGS)

# The chaos suite's full profile (about 9 minutes; `make test` runs a short one): private
# PostgreSQL and Redis, gunicorn, a Celery worker and beat, retrying load, workers killed,
# PostgreSQL restarted, Redis stopped; exits 1 on any loss, double billing or drift.
chaos: install
	$(PY) tests/chaos/run.py --profile full $(CHAOS_ARGS)

# Ten minutes of bench load on private PostgreSQL and Redis; prints the RSS of every gunicorn
# and Celery process along the way and fails if one keeps growing after warm-up; needs wrk.
soak: install
	command -v wrk >/dev/null || apt-get install -y wrk
	$(PY) bench/soak.py $(SOAK_ARGS)
