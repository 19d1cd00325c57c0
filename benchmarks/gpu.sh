#!/usr/bin/env bash
# Every GPU check in one command, for a session lent a GPU machine for a few minutes (see benchmarks/README.md):
#
#     bash benchmarks/gpu.sh            # results in $OUT when set (the device tool's folder), else benchmarks/results
#
# In order of worth, each under its own time limit so that one slow step cannot eat the others' time (about 9 min
# at most in all): the distillation step speed of issue 3 (the one the README lacks), the GPU-only unit test, the
# stacked-training ratio, then the leave-one-out job. Needs PyTorch with CUDA and ddnb's other imports (safetensors,
# tqdm, psutil, pillow); uses only the embedded `shapes` data. Copy the JSON files into benchmarks/results and run
# `PYTHONPATH=. python benchmarks/report.py` to put them in the tables.
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
step() {  # step SECONDS NAME COMMAND...: run, report how it ended, go on either way
    local limit=$1 name=$2; shift 2
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
step 300 distill-speed python3 benchmarks/distill_speed.py --device cuda --out "$out/distill-speed-cuda.json"
step 60 gpu-test python3 -m pytest -q -p no:cacheprovider tests/test_augment.py -k cuda -rs
step 60 stacked-speed python3 benchmarks/stacked_speed.py --device cuda --out "$out/stacked-speed-cuda.json"
step 120 influence-speed python3 benchmarks/influence_speed.py --device cuda --out "$out/influence-speed-cuda.json"
