#!/usr/bin/env bash
# The GPU check: what a GPU machine offers and how Triscope runs on it, from a prebuilt binary
# (such a machine may have no Rust toolchain and no network).
#
#   tools/gpu_check.sh pack            # here: build `bench`, strip and gzip it into
#                                      #   target/gpu-check/bench.gz (about 15 MiB)
#   tools/gpu_check.sh run [OUT_DIR]   # there, from the repository root (the working tree with
#                                      #   target/gpu-check/ carried along): report to OUT_DIR
#                                      #   (default $OUT, else gpu-check-out/)
#   tools/gpu_check.sh run --quick     # the narrow model only, no training step (lavapipe)
#
# `run` writes machine.txt (GPU, driver, Vulkan devices as the system lists them), check.txt
# (`bench --gpu-check`: the wgpu adapter; wgpu against flex on a seeded model's logits and
# Grad-CAM and on the embedded model's probabilities; forward, forward + backward, Grad-CAM,
# PGD-10 and the training step on wgpu; the embedded model's live attack on wgpu) and
# check.json (the timed rows). When wgpu finds no adapter, check.txt says so and machine.txt
# shows what the machine has instead.
set -euo pipefail
cd "$(dirname "$0")/.."
pack_dir="target/gpu-check"

case "${1:-run}" in
pack)
  target="${CARGO_TARGET_DIR:-target}"
  cargo build --release --bin bench
  mkdir -p "$pack_dir"
  cp "$target/release/bench" "$pack_dir/bench"
  strip "$pack_dir/bench"
  gzip -9 -f "$pack_dir/bench"
  ls -l "$pack_dir"
  ;;
run)
  shift || true
  quick=()
  out="${OUT:-gpu-check-out}"
  for arg in "$@"; do
    case "$arg" in
      --quick) quick=(--narrow-only --skip-train --runs 2) ;;
      *) out="$arg" ;;
    esac
  done
  mkdir -p "$out"
  bin="$(mktemp -d)/bench"
  if [ -f "$pack_dir/bench.gz" ]; then
    gunzip -c "$pack_dir/bench.gz" >"$bin"
  elif [ -x "${CARGO_TARGET_DIR:-target}/release/bench" ]; then
    cp "${CARGO_TARGET_DIR:-target}/release/bench" "$bin"
  else
    echo "no $pack_dir/bench.gz: run 'tools/gpu_check.sh pack' where Rust is installed" >&2
    exit 2
  fi
  chmod +x "$bin"
  # Vulkan and Mesa want a private runtime folder and a shader cache they can write.
  export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
  chmod 700 "$XDG_RUNTIME_DIR"
  export MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-$out/shader-cache}"
  {
    echo "== date"; date -u
    echo "== cpu"; (lscpu 2>/dev/null | grep -E "Model name|^CPU\(s\)") || true
    echo "== nvidia-smi"
    (nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1) || echo "(none)"
    echo "== Vulkan ICDs"
    ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null || echo "(no ICD files)"
    echo "== vulkaninfo --summary"
    (vulkaninfo --summary 2>&1 | grep -E "deviceName|deviceType|driverName|apiVersion") ||
      echo "(vulkaninfo missing or failed)"
    echo "== render nodes"; ls /dev/dri /dev/nvidia* 2>/dev/null || echo "(none)"
  } >"$out/machine.txt" 2>&1
  cat "$out/machine.txt"
  status=0
  "$bin" --gpu-check "${quick[@]}" --json "$out/check.json" --torch /nonexistent \
    2>&1 | tee "$out/check.txt" || status=$?
  echo "report in $out/ (exit $status)"
  exit "$status"
  ;;
*)
  sed -n '2,17p' "$0"
  exit 2
  ;;
esac
