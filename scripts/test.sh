#!/usr/bin/env bash
# The whole test suite, set-up included: formatting, lints, unit and integration tests
# (real gateway on loopback, fake upstream, promtool, the official openai Python SDK).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build-cache.sh
export SWITCHYARD_PYTHON="${SWITCHYARD_PYTHON:-$CACHE/venv/bin/python}"
export SWITCHYARD_PROMTOOL="${SWITCHYARD_PROMTOOL:-$(command -v promtool || echo promtool)}"
scripts/setup.sh --test
# The build cache is shared between runs: test binaries and incremental state of earlier builds
# pile up in it (tens of GB over weeks). Drop those untouched for two days; a current one that
# is dropped is only linked again.
for d in "$CARGO_TARGET_DIR/debug/deps" "$CARGO_TARGET_DIR/debug/incremental"; do
  [ -d "$d" ] || continue
  find "$d" -mindepth 1 -maxdepth 1 -mtime +2 \( -type d -o \( -type f -executable ! -name '*.so' \) \) \
    -exec rm -rf {} + 2>/dev/null || true
done
export SWITCHYARD_PROMTOOL="$(command -v promtool)"
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test" >&2
cargo test --locked --all-targets
