#!/usr/bin/env bash
# A node's environment, for every command Ray's launcher runs there (each in `bash --login -i`, which reads
# ~/.bashrc) and for `ray exec`: the project's venv first on PATH; Ray's temp folder in the cluster user's
# home, one per node address (nodes that share a home over NFS keep their sockets apart), never the /tmp/ray
# that other users' clusters share; token authentication for nodes, drivers and the CLI alike (`ray start`
# turns it on by itself when ~/.ray/auth_token exists, `ray.init` with an address never does); and
# RAY_ADDRESS, the cluster this node belongs to (the address file `ray start` wrote), so that
# `python -m sweep.run STUDY` joins it by the rule for a given address (docs/scaling.md).
set -euo pipefail
cat > ~/.kohonen-cluster <<'END'
export PATH="$HOME/kohonen-venv/bin:$PATH"
node=$(set -- ${SSH_CONNECTION:-}; echo "${3:-$(hostname)}")  # the address this node was reached at
export RAY_TMPDIR="$HOME/.ray/$node"
export RAY_AUTH_MODE=token
RAY_ADDRESS=$(cat "$RAY_TMPDIR/ray/ray_current_cluster" 2> /dev/null || true)
export RAY_ADDRESS
END
grep -qxF '. ~/.kohonen-cluster' ~/.bashrc 2> /dev/null || echo '. ~/.kohonen-cluster' >> ~/.bashrc
