#!/usr/bin/env bash
# Trains on every GPU of one machine: one process drives all local devices (data parallel).
#
#   launch/single_node.sh configs/mxm.py /path/to/workdir [--config.data.path=/data/alexandria ...]
set -euo pipefail
CONFIG=${1:?usage: single_node.sh CONFIG WORKDIR [flags...]}
WORKDIR=${2:?usage: single_node.sh CONFIG WORKDIR [flags...]}
shift 2
# Let XLA use most of the GPU memory up front and overlap collectives with compute.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
exec python -m xxact_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
