#!/usr/bin/env bash
# The MLflow tracking server of a cluster's head, listening on 127.0.0.1:PORT only (reach it through
# `ray attach CONFIG -p PORT`). Started unless one answers already (the start commands run again on every
# `ray up`), its PID kept in Ray's temp folder for scripts/cluster/stop.py, then waited for until /health
# answers, so that `ray up` returns with it ready (a sweep's preflight gives a server 3 s). One worker process:
# the sweep's one driver logs in batches, and each more worker costs its start-up on the head's cores.
#   bash scripts/cluster/mlflow.sh PORT BACKEND_STORE_URI ARTIFACTS_DESTINATION     (log: ~/mlflow.log)
set -euo pipefail
port=$1 store=$2 artifacts=$3
wait_s=300
temp="${RAY_TMPDIR:-${TMPDIR:-/tmp}}/ray"
answers() { python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=3)" 2>/dev/null; }
answers && exit 0
case $store in sqlite:///*) mkdir -p "$(dirname "${store#sqlite://}")" ;; esac
mkdir -p "$temp"
# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: no job runner (GenAI evaluations, which no sweep uses; its queue
# would live in /dev/shm, outside the cluster user's home, and outlive the server).
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false nohup mlflow server --backend-store-uri "$store" \
  --artifacts-destination "$artifacts" --host 127.0.0.1 --port "$port" --workers 1 > ~/mlflow.log 2>&1 < /dev/null &
echo $! > "$temp/mlflow.pid"
for _ in $(seq "$wait_s"); do
  answers && exit 0
  kill -0 $! 2>/dev/null || { echo "mlflow server exited; see ~/mlflow.log" >&2; exit 1; }
  sleep 1
done
echo "mlflow server did not answer on 127.0.0.1:$port within $wait_s s; see ~/mlflow.log" >&2
exit 1
