#!/usr/bin/env bash
# Builds the Python package with maturin, installs it into the current Python environment
# (a venv with torch, tensorflow-cpu, flwr and pytest; see .ci/run), lints it, and runs its
# pytest suite. The deployment tests start the `entente` binary built here.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd ../.. && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PYTHON="${PYTHON:-python3}"

cargo build --release -p entente --manifest-path "$ROOT/Cargo.toml"
export ENTENTE_BIN="$TARGET/release/entente"

WHEELS="$(mktemp -d)"
trap 'rm -rf "$WHEELS"' EXIT
"$PYTHON" -m maturin build --release --quiet --out "$WHEELS"
"$PYTHON" -m pip install --quiet --force-reinstall --no-deps "$WHEELS"/entente-*.whl

# The package under its own settings (pyproject.toml), the example under the repo's ruff.toml.
"$PYTHON" -m ruff check python tests
"$PYTHON" -m ruff format --check python tests
(cd "$ROOT" && "$PYTHON" -m ruff check examples/two-frameworks && "$PYTHON" -m ruff format --check examples/two-frameworks)

# -p no:cacheprovider: no .pytest_cache in the checkout; -rs lists why a test skipped.
"$PYTHON" -m pytest tests -p no:cacheprovider -rs "$@"
