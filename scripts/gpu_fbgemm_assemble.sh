#!/usr/bin/env bash
# Rebuilds the fbgemm-gpu CUDA wheel on the GPU machine from pieces carried one per device call
# (../shared/GPU.md: the 465 MB wheel is too large for one call), and installs it into /tmp/fbsite.
#
#   scripts/gpu_fbgemm_assemble.sh K N MD5 [WHEEL_NAME]
#
# K: the index of the piece this call carries, read from .fbK/part; N: the number of pieces; MD5: the
# whole wheel's md5 (.whl-fbgemm/md5.txt here); WHEEL_NAME: its file name (.whl-fbgemm/name.txt).
# Each call keeps its piece as /tmp/fbgemm.whl.parts/part_KK (the folder outlives calls while the machine
# stays warm, 30 s); once all N are there it cats them, checks the md5 and runs
# `pip install --no-deps --target /tmp/fbsite`. Calling again with a piece already kept replaces it; with
# fbgemm already installed it only says so. Exit 0 on a kept piece or a good install, 1 on any error.
set -uo pipefail
k=${1:?piece index K}; n=${2:?number of pieces N}; md5=${3:?md5 of the whole wheel}
name=${4:-fbgemm_gpu-1.6.0-cp312-cp312-manylinux_2_28_x86_64.whl}
parts=${FBGEMM_PARTS:-/tmp/fbgemm.whl.parts}
site=${FBGEMM_SITE:-/tmp/fbsite}
if [ -f "$site/.installed" ]; then
  echo "fbgemm: already installed in $site ($(cat "$site/.installed")); nothing to do"; exit 0
fi
mkdir -p "$parts" || exit 1
piece=$(printf '%s/part_%02d' "$parts" "$k")
if [ -f ".fb$k/part" ]; then
  cp ".fb$k/part" "$piece.tmp" && mv "$piece.tmp" "$piece" || { echo "fbgemm: could not keep .fb$k/part"; exit 1; }
  echo "fbgemm: kept piece $k: $(stat -c %s "$piece") bytes, md5 $(md5sum < "$piece" | cut -c1-32)"
else
  echo "fbgemm: .fb$k/part was not carried (carry [\".fb$k\"])"
fi
have=$(ls "$parts" | grep -c '^part_[0-9][0-9]$')
echo "fbgemm: $have of $n pieces on this machine: $(ls "$parts" | tr '\n' ' ')"
missing=""
for i in $(seq 0 $((n - 1))); do [ -f "$(printf '%s/part_%02d' "$parts" "$i")" ] || missing="$missing $i"; done
if [ -n "$missing" ]; then
  echo "fbgemm: waiting for pieces:$missing (a fresh machine starts from none: then carry them all again)"
  [ -f ".fb$k/part" ] || exit 1
  exit 0
fi
wheel="/tmp/$name"
start=$(date +%s)
for i in $(seq 0 $((n - 1))); do cat "$(printf '%s/part_%02d' "$parts" "$i")"; done > "$wheel" || exit 1
got=$(md5sum "$wheel" | cut -c1-32)
if [ "$got" != "$md5" ]; then
  echo "fbgemm: md5 mismatch: $got, expected $md5 ($(stat -c %s "$wheel") bytes); pieces left in $parts"
  rm -f "$wheel"; exit 1
fi
echo "fbgemm: $name assembled, $(stat -c %s "$wheel") bytes, md5 ok"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheel" \
  || { echo "fbgemm: pip install failed"; exit 1; }
rm -f "$wheel"; rm -rf "$parts"
echo "$name" > "$site/.installed"
echo "fbgemm: installed into $site in $(( $(date +%s) - start )) s; import check:"
PYTHONPATH=$site python3 -c 'import torch, fbgemm_gpu, importlib.metadata as m
print("fbgemm_gpu", m.version("fbgemm_gpu"), "on torch", torch.__version__, "cuda", torch.version.cuda,
      "| cuda tbe op:", hasattr(torch.ops.fbgemm, "split_embedding_codegen_lookup_rowwise_adagrad_function"))' \
  || { echo "fbgemm: import failed"; exit 1; }
