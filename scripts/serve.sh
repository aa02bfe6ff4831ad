#!/usr/bin/env bash
# Builds (release) and starts the gateway on the default policy, set-up included.
#   scripts/serve.sh [serve options]   e.g. --listen 0.0.0.0:8080 --policy policies/cost-saver.yaml
# The cloud route works once OPENAI_API_KEY (and optionally OPENAI_BASE_URL) is set.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
scripts/setup.sh
cargo build --locked --release --bin switchyard >&2
exec "$CARGO_TARGET_DIR/release/switchyard" serve "$@"
