#!/usr/bin/env bash
# Downloads, for a CUDA machine without network access, the wheels the benchmarks and the trainer
# need beyond a stock JAX image (jax, flax, optax, orbax-checkpoint, tensorstore, absl-py, etils,
# protobuf, PyYAML, psutil present); clu and pytest (the `kernelcheck` stage) too, and pymatgen
# with WITH_PYMATGEN=1. Then, on that machine:
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
  grain==0.2.18 array-record==0.8.6 ml-collections==1.1.0 portpicker==1.6.0 tensorboardX==2.6.5 \
  clu==0.0.12 pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0
# pymatgen and the dependencies a stock JAX image lacks, for `prepare` on the device (no stage
# of gpu_session.sh imports it; benchmarks/gpu_preflight.py says what is still missing there).
if [[ ${WITH_PYMATGEN:-0} == 1 ]]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
    --implementation cp "${platforms[@]}" -d "$dest" \
    pymatgen==2026.10.24 monty==2026.10.21 spglib==2.8.0 ruamel.yaml ruamel.yaml.clib \
    networkx==3.6.1 sympy==1.14.0 mpmath uncertainties==3.2.3 tabulate==0.10.0 \
    palettable==3.3.3 bibtexparser==1.4.4 orjson==3.13.0 joblib==1.6.0
fi
ls -1 "$dest"
