#!/usr/bin/env bash
# Issue 14's side-by-side on the lent GPU machine: recframe bench vs plain PyTorch vs TorchRec for S, M1 and
# MLPerf4M in one call, one markdown table (scripts/bench_trainer.py --workloads).
#
#   scripts/gpu_bench_e2e.sh OUTDIR [more bench_trainer.py args; a later --recframe-variants/--steps wins]
#
# Needs the carried folders .whl (hydra-core, omegaconf, antlr4 wheels: installed into /tmp/site; torchrec,
# tensordict, ...: into /tmp/trsite) and .bench (plain_torch_dlrm.py, torchrec_dlrm.py); TorchRec rows run where
# /tmp/fbsite holds fbgemm_gpu (scripts/gpu_fbgemm_assemble.sh, earlier calls on the same warm machine).
# Writes OUTDIR/table.md (rewritten after every run), results.jsonl, one log per run, bench.log, env.txt.
# DEADLINE_S (default 540): no run starts after that many seconds of the benchmark (the device call's limit
# is 600 s); the rows left say "skipped". TORCHREC_TF32=0 leaves out TorchRec's TF32 rows.
set -uo pipefail
out=${1:?usage: scripts/gpu_bench_e2e.sh OUTDIR [bench_trainer.py args]}; shift
cd "$(dirname "$0")/.." || exit 1
mkdir -p "$out" || exit 1
# recframe's missing pieces (hydra-core, omegaconf, antlr4) into /tmp/site; TorchRec and its pins (torchmetrics
# 1.0.3, ...) into /tmp/trsite, seen by the TorchRec runs only, so they never shadow recframe's environment.
ours=$(ls .whl/*.whl | grep -E '/(hydra_core|omegaconf|antlr4)')
theirs=$(ls .whl/*.whl | grep -vE '/(hydra_core|omegaconf|antlr4)')
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $ours \
  || { echo "gpu_bench_e2e: installing .whl into /tmp/site failed (carry .whl)"; exit 1; }
if [ -n "$theirs" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/trsite $theirs \
    || { echo "gpu_bench_e2e: installing TorchRec's wheels into /tmp/trsite failed"; exit 1; }
fi
torchrec=()
if [ -f /tmp/fbsite/fbgemm_gpu/__init__.py ]; then
  torchrec=(--torchrec-python python3 --torchrec-pythonpath /tmp/fbsite:/tmp/trsite:/tmp/site)
  [ "${TORCHREC_TF32:-1}" = 1 ] && torchrec+=(--torchrec-tf32)
else
  echo "gpu_bench_e2e: no fbgemm_gpu in /tmp/fbsite (scripts/gpu_fbgemm_assemble.sh): no TorchRec rows"
fi
{ nvidia-smi -L; python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
  git log -1 --format='recframe %h %s' 2>/dev/null; git status --short 2>/dev/null | head -30; } > "$out/env.txt" 2>&1
cat "$out/env.txt"
PYTHONUNBUFFERED=1 python3 scripts/bench_trainer.py --workloads S M1 MLPerf4M --accelerator gpu \
  --python python3 --recframe-pythonpath "$PWD:/tmp/site" "${torchrec[@]}" --bench-dir .bench \
  --recframe-variants default tf32=trainer.matmul_precision=high bf16=trainer.precision=bf16-mixed \
  --warmup 20 --steps 100 --timeout 240 --deadline-s "${DEADLINE_S:-540}" --out-dir "$out" "$@" 2>&1 \
  | tee "$out/bench.log"
