#!/usr/bin/env bash
# gunicorn in the foreground, a Celery worker and beat beside it; Ctrl-C stops all three.
set -euo pipefail
host=${1:-127.0.0.1}; port=${2:-8000}
bin=.venv/bin
# Prometheus counters shared by every process here (gateway_billing/metrics.py); a fresh
# directory per start, as prometheus_client's multiprocess mode requires.
export PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-/tmp/gateway_billing-metrics}
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
"$bin/celery" -A gateway_billing worker --pool=prefork -c 2 --loglevel=INFO &
worker=$!
"$bin/celery" -A gateway_billing beat --loglevel=INFO --schedule=/tmp/gateway_billing-beat &
beat=$!
trap 'kill $worker $beat 2>/dev/null; wait' EXIT INT TERM
"$bin/gunicorn" gateway_billing.wsgi -w "${WEB_CONCURRENCY:-2}" -b "$host:$port" --no-control-socket \
    -c scripts/gunicorn.conf.py
