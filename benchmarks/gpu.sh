#!/usr/bin/env bash
# Every GPU check in one command, for a session lent a GPU machine for a few minutes (see benchmarks/README.md):
#
#     bash benchmarks/gpu.sh            # on the GPU machine: results in $OUT when set (the device tool's folder), else benchmarks/results
#     DRY=1 bash benchmarks/gpu.sh      # here, on the CPU, with tiny settings: do the scripts run? (results in /tmp/gpu-dry)
#
# At most 9 minutes wall in all (GPU_BUDGET seconds, default 520, for the steps; each step also has its own
# limit, cut to what is left) and 6 files: one log (gpu.log, every step's output and how it ended)
# and one JSON per benchmark. In order of worth (the last is cut short when the others use their whole limits):
#   step-profile-cuda.json     benchmarks/step_profile.py: where a ConvNet-128 step's time goes, instance-norm candidates (110 s)
#   distill-speed-cuda.json    benchmarks/distill_speed.py: one step of each distiller at its published settings (120 s)
#   influence-speed-cuda.json  benchmarks/influence_speed.py, ConvNet, the 101 models x 40 steps, batched with eager
#                              kernels and with compiled ones replayed as CUDA graphs (ddnb.kernels), against one by one (120 s)
#   the GPU unit tests: every tests/**/test_*.py that mentions cuda, -k cuda (60 s; compiles too)
#   memory-bounds-cuda.json    benchmarks/distill_speed.py --memory: each method with and without its memory bound (80 s;
#                              the CPU measures it with DDNB_KEEP_FREED_MEMORY=0, too slow for DRY=1)
#   curvature-speed-cuda.json  benchmarks/curvature_speed.py at the documented GPU settings (75 s)
# A script stopped at its limit keeps what it wrote (the scripts write their JSON as they go, except
# distill_speed and influence_speed, which write at the end). Needs PyTorch with CUDA and ddnb's other imports
# (numpy, scipy, safetensors, tqdm, psutil, pillow), pytest for the tests; uses only generated data (`shapes`).
# Copy the JSON files into benchmarks/results and run `PYTHONPATH=. python benchmarks/report.py`.
set -uo pipefail
dry=${DRY:-0}
if [ "$dry" = 1 ]; then dev=cpu; out=${OUT:-/tmp/gpu-dry}; else dev=cuda; out=${OUT:-benchmarks/results}; fi
python=${PYTHON:-python3}
budget=${GPU_BUDGET:-$([ "$dry" = 1 ] && echo 1500 || echo 520)}
mkdir -p "$out"
log="$out/gpu.log"
: > "$log"
export PYTHONPATH=. PYTHONUNBUFFERED=1 TORCH_SHOW_CPP_STACKTRACES=1
export DDNB_STORE=${DDNB_STORE:-/tmp/ddnb-gpu-store}  # the shapes cache; nothing is kept
began=$SECONDS

say() { echo "$*" | tee -a "$log"; }

step() {  # step SECONDS NAME COMMAND...: run under min(SECONDS, what is left), log it, go on either way
    local limit=$1 name=$2; shift 2
    local left=$((budget - (SECONDS - began)))
    if [ "$left" -lt 15 ]; then say "== $name: skipped, ${left} s of the ${budget} s budget left"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    say "== $name: start at $((SECONDS - began)) s, limit ${limit} s: $*"
    local start=$SECONDS
    timeout --kill-after=5 "$limit" "$@" >> "$log" 2>&1
    local code=$?
    say "== $name: exit $code after $((SECONDS - start)) s$([ $code = 124 ] && echo ' (stopped at its limit)')"
}

gpu_tests() {  # gpu_tests SECONDS: every tests/**/test_*.py that mentions cuda, its cuda tests only
    local tests
    tests=$(grep -rl cuda tests --include='test_*.py' | sort | tr '\n' ' ')
    # shellcheck disable=SC2086
    step "$1" gpu-tests $python -m pytest -q -p no:cacheprovider $tests -k cuda -rs
}

say "== gpu.sh $(date -u +%FT%TZ) dry=$dry device=$dev out=$out budget=${budget}s"
git rev-parse HEAD >> "$log" 2>&1 || true
{ command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; } >> "$log" 2>&1
$python -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)" 2>&1 | tee -a "$log"
if [ "$dry" != 1 ]; then $python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" >> "$log" 2>&1 || { say "no CUDA: stop"; exit 1; }; fi

if [ "$dry" = 1 ]; then
    step 300 step-profile $python benchmarks/step_profile.py --device cpu --quick --batch 8 --out "$out/step-profile-$dev.json"
    step 300 curvature-speed $python benchmarks/curvature_speed.py --device cpu --threads 1 --distilled-probes 4 --paper-max-probes 5 \
        --reference-probes 4 --hvp-batch 16 --hvp-vectors 2 --real-size 200 --real-probes 2 --sampled-probes 8 --batch-size 100 \
        --sample-size 16 --out "$out/curvature-speed-$dev.json"
    step 600 distill-speed $python benchmarks/distill_speed.py --device cpu --repeats 1 --methods dm --out "$out/distill-speed-$dev.json"
    step 300 influence-speed $python benchmarks/influence_speed.py --device cpu --nets convnet-tiny --steps 2 --test-images 20 \
        --chunk-size 4 --kernels eager compile --out "$out/influence-speed-$dev.json"
    gpu_tests 60
else
    step 110 step-profile $python benchmarks/step_profile.py --device cuda --budget 95 --out "$out/step-profile-$dev.json"
    step 120 distill-speed $python benchmarks/distill_speed.py --device cuda --out "$out/distill-speed-$dev.json"
    step 120 influence-speed $python benchmarks/influence_speed.py --device cuda --nets convnet --steps 40 --kernels eager graphs \
        --out "$out/influence-speed-$dev.json"
    gpu_tests 60
    step 80 memory-bounds $python benchmarks/distill_speed.py --device cuda --memory --repeats 2 --out "$out/memory-bounds-$dev.json"
    step 75 curvature-speed $python benchmarks/curvature_speed.py --device cuda --batch-size 500 --hvp-batch 500 --hvp-vectors 16 \
        --sample-size 128 --out "$out/curvature-speed-$dev.json"
fi
rm -f "$out"/*.tmp
say "== done after $((SECONDS - began)) s; files: $(cd "$out" && ls | tr '\n' ' ')"
