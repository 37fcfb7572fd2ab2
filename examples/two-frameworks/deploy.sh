#!/usr/bin/env bash
# The two-framework federation as a real deployment on this machine: a coordinator and three
# nodes (Keras, PyTorch, entente's trainer) over mutual TLS on loopback, secure aggregation.
# Needs `entente` on PATH (or ENTENTE=path/to/entente) and the Python package installed;
# run prepare.py first.
set -euo pipefail
cd "$(dirname "$0")"
ENTENTE="${ENTENTE:-entente}"
PORT="${PORT:-7443}"
rm -rf keys federation.entente.db* federation.*.audit-heads.jsonl
mkdir -p runs
"$ENTENTE" keys init --federation two-frameworks --dir keys
"$ENTENTE" keys issue --coordinator 127.0.0.1 --dir keys
for site in site-x site-y site-z; do "$ENTENTE" keys issue "$site" --dir keys; done

"$ENTENTE" serve federation.toml --listen "127.0.0.1:$PORT" --keys keys \
  --eval-data /usr/share/datasets/fashion-mnist --out runs/deployed.safetensors &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
python site.py site-x --coordinator "https://127.0.0.1:$PORT" --keys keys &
python site.py site-y --coordinator "https://127.0.0.1:$PORT" --keys keys &
"$ENTENTE" join federation.toml --coordinator "https://127.0.0.1:$PORT" --site site-z --keys keys &
wait $SERVE
wait
python check_model.py runs/deployed.safetensors
