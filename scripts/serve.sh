#!/usr/bin/env bash
# Builds (release) and starts the gateway on the default policy, set-up included.
#   scripts/serve.sh [serve options]   e.g. --listen 0.0.0.0:8080 --policy policies/cost-saver.yaml
# The cloud route works once OPENAI_API_KEY (and optionally OPENAI_BASE_URL) is set.
# The on-box model is Qwen2.5-Coder-1.5B-Instruct Q4_K_M (fetched here, 1.1 GB once): the most
# accurate of the models measured in docs/local-model.md that still decodes at 15 tokens/s or more
# with 2 threads on an AVX2 host. SWITCHYARD_LOCAL_MODEL=path/to/file.gguf picks another, e.g.
# models/SmolLM2-135M-Instruct.Q4_1.gguf (fetched by the set-up) on a small machine, and
# SWITCHYARD_LOCAL_HEADS=DIR classifier heads calibrated for it (`switchyard train-router --labels`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -z "${SWITCHYARD_LOCAL_MODEL:-}" ]; then
  scripts/fetch-models.sh --qwen15
  export SWITCHYARD_LOCAL_MODEL="$PWD/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
  # The classifier heads calibrated for that model (docs/router-quality.md#shipped-heads-for-the-default-model);
  # SWITCHYARD_LOCAL_HEADS= (empty) keeps the shared heads.
  export SWITCHYARD_LOCAL_HEADS="${SWITCHYARD_LOCAL_HEADS-$PWD/policies/heads/qwen2.5-coder-1.5b-instruct-q4_k_m}"
fi
source scripts/build-cache.sh
cargo build --locked --release --bin switchyard >&2
exec "$CARGO_TARGET_DIR/release/switchyard" serve "$@"
