#!/usr/bin/env bash
# Conversion settings of the digits ViT compared sample by sample with `transpike compare`
# (BENCHMARKS.md §2, "Which setting is better"). Usage: benchmarks/compare.sh [OUT] (T=16 to change T).
set -euo pipefail
out=${1:-benchmarks/out/compare}
steps=${T:-8}
mkdir -p "$out"

run() {  # run NAME [conversion options]: the demo's digits ViT converted so, evaluated on its test split
    local name=$1
    shift
    transpike demo --out "$out/$name" --time-steps "$steps" --force "$@" >"$out/$name.log"
}

run paper
run mse --threshold mse --rounding nearest
run mse4 --threshold mse --rounding nearest --levels-per-octave 4
run burst --neuron burst --threshold mse
run sit --method sit
run sit-mse4 --method sit --threshold mse --rounding nearest --levels-per-octave 4
# the settings against the paper's; then SIT's spiking softmax against ECMT's float softmax at the same
# thresholds, and burst neurons against one spike per step
transpike compare "$out/paper" "$out/mse" "$out/mse4" "$out/burst" "$out/sit" --out "$out/vs-paper" --force
transpike compare "$out/mse4" "$out/sit-mse4" "$out/burst" --out "$out/vs-mse4" --force
