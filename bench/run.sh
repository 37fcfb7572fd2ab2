#!/usr/bin/env bash
# Runs entente's benches and the PyTorch reference, then prints the medians and their ratios.
#
#   bash bench/run.sh
#
# 1. cargo bench -p entente-core --bench aggregation    (FedAvg vs memcpy, bytes/s)
# 2. cargo bench -p entente-learn --bench training      (2NN on Fashion-MNIST, samples/s),
#    once with rayon's default pool and once with RAYON_NUM_THREADS=1
# 3. bench/pytorch_2nn.py with all cores and with 1 thread, if the venv exists
#    (ENTENTE_BENCH_VENV, default /root/.cache/entente-bench-venv; see bench/README.md)
#
# Figures are the medians of criterion's per-iteration times (estimates.json) and of the
# PyTorch script's repetitions. The machine may be shared: compare ratios taken in one run.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${ENTENTE_BENCH_VENV:-/root/.cache/entente-bench-venv}"
CORES="$(nproc)"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
CRITERION="$TARGET_DIR/criterion"
TORCH_LOG="$(mktemp)"
trap 'rm -f "$TORCH_LOG"' EXIT

echo "== aggregation (entente-core)"
cargo bench -p entente-core --bench aggregation
echo "== training, default rayon pool (entente-learn)"
cargo bench -p entente-learn --bench training
echo "== training, RAYON_NUM_THREADS=1 (entente-learn)"
RAYON_NUM_THREADS=1 cargo bench -p entente-learn --bench training

if [[ -x "$VENV/bin/python" ]]; then
    echo "== PyTorch reference ($VENV)"
    for t in "$CORES" 1; do
        "$VENV/bin/python" bench/pytorch_2nn.py --threads "$t" | tee -a "$TORCH_LOG"
    done
else
    echo "== PyTorch reference skipped: no venv at $VENV (see bench/README.md)"
fi

echo
echo "== summary (medians)"
python3 - "$CRITERION" "$CORES" "$TORCH_LOG" <<'EOF'
import json
import os
import re
import sys

criterion, cores, torch_log = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def median_ns(*parts):
    path = os.path.join(criterion, *parts, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except OSError:
        return None


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "n/a"


round_bytes = 100 * 1_000_000 * 4
examples = 6400
gbs = {}
for name in ("fedavg_round", "fedavg_add", "memcpy_100x4MB"):
    ns = median_ns("aggregation", name)
    gbs[name] = round_bytes / ns if ns else None  # bytes per ns = GB/s
    shown = f"{gbs[name]:.2f} GB/s ({ns / 1e6:.1f} ms per 400 MB)" if ns else "missing"
    print(f"aggregation {name:<16} {shown}")
print(f"fedavg_round / memcpy  {ratio(gbs['fedavg_round'], gbs['memcpy_100x4MB'])}")
print(f"fedavg_add   / memcpy  {ratio(gbs['fedavg_add'], gbs['memcpy_100x4MB'])}")

burn = {}
for threads in sorted({cores, 1}, reverse=True):
    ns = median_ns("training", "2nn_fashion_mnist_epoch_b32", f"rayon_threads_{threads}")
    burn[threads] = examples / (ns / 1e9) if ns else None
    shown = f"{burn[threads]:.0f} samples/s" if ns else "missing"
    print(f"burn 2NN rayon threads {threads}: {shown}")
print(f"burn default ({cores}) / 1 thread  {ratio(burn.get(cores), burn.get(1))}")

torch = {}
try:
    with open(torch_log) as f:
        for line in f:
            m = re.search(r"threads=(\d+): median (\d+) samples/s", line)
            if m:
                torch[int(m.group(1))] = float(m.group(2))
except OSError:
    pass
for threads, rate in sorted(torch.items(), reverse=True):
    print(f"pytorch 2NN threads {threads}: {rate:.0f} samples/s")
if torch:
    print(f"pytorch {cores} threads / 1 thread  {ratio(torch.get(cores), torch.get(1))}")
    for threads in sorted(torch, reverse=True):
        print(f"burn / pytorch at {threads} thread(s)  {ratio(burn.get(threads), torch.get(threads))}")
EOF
