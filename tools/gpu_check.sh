#!/usr/bin/env bash
# One GPU run of the decode paths and the real-size benchmark (about 5-8 minutes on one H100/H200).
#
# On a machine that reaches the package registry, from the repository root, fetch the wheels
# that a bare CUDA image may lack or hold in other versions (into .whl/, which git ignores):
#     bash tools/gpu_check.sh prepare
# Then on the GPU machine, from a copy of the repository root with .whl/ beside it:
#     LENS_COMMIT=$(git rev-parse --short HEAD) OUT=/some/dir bash tools/gpu_check.sh
# (LENS_COMMIT names the commit in the results where the copy has no .git; OUT defaults to
# ./gpu_check_out.) Environment: PYTHON (default python3), SCALE (real; tiny for a CPU smoke
# run of this script), QUICK=1 (fewer repeats), COUNT (scenes of step 3, default 6).
#
# Steps, each logged; a failed step does not stop the next, and the exit status is the number
# of failed steps:
# 1. Wheels in .whl/ are installed into a private directory put first on PYTHONPATH, so an
#    onnxruntime-gpu wheel placed there shadows an onnxruntime CPU build of the image (both
#    install the module 'onnxruntime'). `prepare` fetches transformers, tokenizers and
#    segment-anything at requirements.lock's versions; onnxruntime-gpu is
#    fetched only with ORT_GPU=1 (its wheel is a few hundred MB).
# 2. The environment: torch, CUDA, GPU, transformers, onnxruntime and its providers.
# 3. bench.static_decode_check: lens-tiny answers with decode dynamic / static / graph on the
#    GPU, fp32 and bf16: every answer and mask must equal the dynamic cache's.
# 4. bench.gpu_bench: memory bandwidth and the floor, decode ms/token of the dynamic cache,
#    the static cache, the static cache + CUDA graph and transformers' generate, SAM ViT-H,
#    segment end to end, onnxruntime's CUDA provider (or a clear "NOT MEASURED").
# All results (.json + .md of steps 3 and 4, the log) are written to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=.whl

lock_version() {  # the version requirements.lock pins for a package
    grep -i "^$1==" requirements.lock | head -1 | cut -d= -f3
}

if [[ "${1:-}" == "prepare" ]]; then
    mkdir -p "$WHEELS"
    grep -qx "/$WHEELS/" .git/info/exclude 2>/dev/null || echo "/$WHEELS/" >>.git/info/exclude
    # The GPU image's interpreter: CPython 3.12 on x86-64.
    platform=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    # (the image's huggingface_hub suits transformers; the locked one needs packages the image lacks)
    packages=(transformers tokenizers segment-anything)
    [[ "${ORT_GPU:-0}" == 1 ]] && packages+=(onnxruntime-gpu)
    failed=0
    for name in "${packages[@]}"; do
        version=$(lock_version "$name")
        spec=$name${version:+==$version}
        [[ "$name" == onnxruntime-gpu ]] && spec="onnxruntime-gpu==$(lock_version onnxruntime)"
        echo "prepare: $spec"
        "$PY" -m pip download -q --no-deps --only-binary=:all: "${platform[@]}" -d "$WHEELS" "$spec" || failed=$((failed + 1))
    done
    ls -l "$WHEELS"
    exit "$failed"
fi

OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
SCALE=${SCALE:-real}
QUICK=${QUICK:+--quick}
failed=0
log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
step() {  # step SECONDS NAME COMMAND...: run with a time limit, count a failure
    local limit=$1 name=$2
    shift 2
    log "== $name"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    if [[ $rc -ne 0 ]]; then
        failed=$((failed + 1))
        log "   $name failed (exit $rc$([[ $rc -eq 124 ]] && echo ', time limit'))"
    fi
}

# 1. wheels, and the package layout without installing the project: training/ is lens_training.
SITE=/tmp/lens_gpu_site
PKGS=/tmp/lens_gpu_pkgs
mkdir -p "$SITE" "$PKGS"
ln -sfn "$PWD/training" "$PKGS/lens_training"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    step 120 "install wheels from $WHEELS" "$PY" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
else
    log "no wheels in $WHEELS: the image's packages are used (onnxruntime's CUDA provider only if it has one)"
fi
export PYTHONPATH="$SITE:$PWD:$PKGS${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export LENS_COMMIT=${LENS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
log "commit $LENS_COMMIT, scale $SCALE${QUICK:+, quick}, results in $OUT"

# 2. environment
step 60 "environment" "$PY" - <<'EOF'
import importlib
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("GPU", torch.cuda.get_device_name(0))
for name in ("transformers", "tokenizers", "segment_anything", "onnxruntime"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "installed"), getattr(module, "__file__", ""))
    except ImportError as exc:
        print(name, "MISSING:", exc)
try:
    import onnxruntime as ort
    print("onnxruntime providers", ort.get_available_providers())
except ImportError:
    pass
EOF

DEVICE=cuda
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || DEVICE=cpu
[[ $DEVICE == cpu ]] && log "no CUDA device: the checks run on the CPU (graphs fall back to eager)"

# 3. the decode paths give the same answers where graphs are really captured
step 150 "static decode check ($DEVICE)" "$PY" -m bench.static_decode_check --device "$DEVICE" --count "${COUNT:-6}" --out "$OUT"

# 4. the benchmark (results rewritten after every section: a time limit still leaves numbers)
step 330 "gpu_bench ($SCALE)" "$PY" -m bench.gpu_bench --out "$OUT" --scale "$SCALE" $QUICK

log "done: $failed step(s) failed; files in $OUT:"
ls -l "$OUT" | tee -a "$LOG"
exit "$failed"
