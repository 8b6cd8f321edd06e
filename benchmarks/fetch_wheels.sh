#!/usr/bin/env bash
# Downloads, for a CUDA machine without network access, the wheels the benchmarks and the trainer
# need beyond a stock JAX image (jax, flax, optax, orbax-checkpoint, tensorstore, absl-py, etils,
# protobuf, PyYAML, psutil present). Then, on that machine:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
#
# Usage: bash benchmarks/fetch_wheels.sh [DEST=.whl] [PYTHON_VERSION=3.12]
set -euo pipefail
dest="${1:-.whl}"
py="${2:-3.12}"
mkdir -p "$dest"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
  --implementation cp "${platforms[@]}" -d "$dest" \
  grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 portpicker==1.6.0 tensorboardX==2.6.5
ls -1 "$dest"
