#!/usr/bin/env bash
# GPU checks of the triton embedding backend (issue 9), in one go: the gpu-marked tests, the four-shape
# benchmark (triton vs fbgemm where it imports vs the plain-torch probe, interleaved in one process; fp32,
# then fp16/bf16 weights; S also without autograd), rowwise Adagrad, and the dlrm experiment
# through `recframe bench` with the triton and torch backends. Logs go to OUTDIR.
#   usage: scripts/gpu_check_triton.sh OUTDIR [PROBE]   (PROBE: ../shared/bench/tbe_gpu.py, run too if given)
# Needs a CUDA GPU and recframe importable (e.g. PYTHONPATH=$PWD) with hydra-core and omegaconf.
set -u
out=${1:?usage: scripts/gpu_check_triton.sh OUTDIR [PROBE]}
probe=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ date -u; nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton',
triton.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$out/card.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu 2>&1 | tee "$out/tests.txt"
python3 scripts/bench_embedding.py --devices cuda --shapes S M1 M20 MLPerf4M --optimizer rowwise_adagrad \
    --backend fbgemm triton probe --weight-dtypes fp32 --interleave --steps 50 --rounds 5 --max-gb 120 \
    2>&1 | tee "$out/bench.txt"
python3 scripts/bench_embedding.py --devices cuda --shapes S --optimizer rowwise_adagrad --interleave \
    --backend probe probe-autograd triton triton-direct --weight-dtypes fp32 bf16 --steps 100 --rounds 9 2>&1 | tee "$out/bench_S.txt"
python3 scripts/bench_embedding.py --devices cuda --shapes M1 M20 MLPerf4M --optimizer rowwise_adagrad --interleave \
    --backend fbgemm triton --weight-dtypes fp16 bf16 --steps 30 --rounds 3 --max-gb 120 2>&1 | tee "$out/bench_16.txt"
if [ -n "$probe" ]; then python3 "$probe" 2>&1 | tee "$out/probe.txt"; fi
for backend in triton torch; do
    python3 -m recframe bench +experiment=dlrm trainer.accelerator=gpu tables.backend=$backend \
        hydra.run.dir=/tmp/recframe_bench_$backend 2>&1 | tail -n 5 | tee "$out/dlrm_$backend.txt"
done
