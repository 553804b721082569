#!/usr/bin/env bash
# The way down of an on-premise cluster (cluster-onprem.yaml, docs/scaling.md "Your own machines"): the
# head's Ray processes (its autoscaler first, so that it relaunches no worker) and its MLflow server, then
# each worker's, stopped by their PIDs (scripts/cluster/stop.py on the node); then `ray down`, which on this
# provider only forgets the nodes, after a bare `ray stop` on the head (hard-coded in Ray 2.60's teardown: it
# ends every Ray process the SSH user may signal, so run the cluster as a dedicated Unix user).
#   bash scripts/onprem-down.sh cluster-onprem.yaml
set -euo pipefail
config=$1
stop='. ~/.kohonen-cluster && python ~/kohonen/scripts/cluster/stop.py'
ray exec "$config" "$stop"
read -r user key workers < <(python - "$config" << 'END'
import sys
import yaml
config = yaml.safe_load(open(sys.argv[1]))
print(config["auth"]["ssh_user"], config["auth"]["ssh_private_key"], " ".join(config["provider"]["worker_ips"]))
END
)
for ip in $workers; do
  ssh -i "${key/#\~/$HOME}" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR "$user@$ip" "bash -c '$stop'"
done
ray down -y "$config"
