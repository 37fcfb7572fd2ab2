#!/usr/bin/env bash
# Peak memory of `entente simulate` on the 100-site Fashion-MNIST workload (the 2NN, 10 sites
# per round, 20 rounds, Dirichlet 0.5), for one or more entente binaries, alternating runs so
# that they see the same machine; prints each run and the median peak RSS and wall time per
# binary (GNU time's %M and %e).
#
#   bash bench/simulate_memory.sh [RUNS] BINARY...
#   bash bench/simulate_memory.sh 3 /tmp/entente-before target/release/entente
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
shift
[ $# -ge 1 ] || { echo "usage: $0 RUNS BINARY..." >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# examples/fashion-mnist.toml with 100 sites, a tenth of them each round, 20 rounds.
python3 - "$WORK/fm100.toml" <<'PY'
import sys
text = open("examples/fashion-mnist.toml").read()
head, rest = text.split("[[sites]]", 1)
tail = rest[rest.index("[model]"):]
sites = "".join(f'[[sites]]\nname = "site-{i:03d}"\n\n' for i in range(1, 101))
tail = (tail.replace("rounds = 30", "rounds = 20").replace("fraction = 1.0", "fraction = 0.1")
        .replace("min_sites = 5", "min_sites = 10"))
open(sys.argv[1], "w").write(head.replace("fashion-mnist-10", "fashion-mnist-100") + sites + tail)
PY

for run in $(seq "$RUNS"); do
  for bin in "$@"; do
    /usr/bin/time -f "%M %e" -o "$WORK/time" "$bin" simulate "$WORK/fm100.toml" \
      --out "$WORK/run" --quiet >/dev/null
    read -r kb secs <"$WORK/time"
    rm -rf "$WORK/run"
    echo "$bin run $run: peak RSS $((kb / 1024)) MiB, $secs s"
    echo "$bin $kb $secs" >>"$WORK/all"
  done
done
python3 - "$WORK/all" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    b, kb, s = line.split()
    rows.setdefault(b, []).append((int(kb), float(s)))
base = None
for b, r in rows.items():
    mib = statistics.median(k for k, _ in r) / 1024
    secs = statistics.median(s for _, s in r)
    base = base or (mib, secs)
    print(f"{b}: median peak RSS {mib:.0f} MiB ({mib / base[0]:.2f}x the first), "
          f"median wall {secs:.1f} s ({secs / base[1]:.2f}x)")
PY
