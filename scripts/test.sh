#!/usr/bin/env bash
# The whole test suite, set-up included: formatting, lints, unit and integration tests
# (real gateway on loopback, fake upstream, promtool, the official openai Python SDK).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export SWITCHYARD_PYTHON="${SWITCHYARD_PYTHON:-$CACHE/venv/bin/python}"
export SWITCHYARD_PROMTOOL="${SWITCHYARD_PROMTOOL:-$(command -v promtool || echo promtool)}"
scripts/setup.sh --test
export SWITCHYARD_PROMTOOL="$(command -v promtool)"
echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test" >&2
cargo test --locked --all-targets
