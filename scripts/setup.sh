#!/usr/bin/env bash
# Idempotent set-up for the two README commands. Skips whatever is already there.
#   scripts/setup.sh          what `serve` needs: the classifier's encoder and SmolLM2 (more with
#                             SWITCHYARD_MODELS, see scripts/fetch-models.sh; scripts/serve.sh
#                             fetches its default on-box model, Qwen2.5-Coder-1.5B, itself)
#   scripts/setup.sh --test   plus what the tests need: prometheus and promtool, redis-server, buildah,
#                             a Python venv with the openai and anthropic SDKs, kubernetes-validate and check-jsonschema,
#                             the opt-in Qwen2.5-Coder model and its reference tokenizer.json
# Caches live under ${SWITCHYARD_CACHE:-~/.cache/switchyard}, outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
mkdir -p "$CACHE"

log() { echo "setup: $*" >&2; }

command -v cargo >/dev/null || { log "cargo is required (https://rustup.rs)"; exit 1; }

[ "${1:-}" = "--test" ] || scripts/fetch-models.sh

apt_install() {  # apt_install PACKAGE...: Debian packages, as root or with sudo
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

if [ "${1:-}" = "--test" ]; then
  scripts/fetch-models.sh --qwen --gemma3
  if ! command -v promtool >/dev/null; then
    log "installing promtool (Debian package prometheus)"
    apt_install prometheus
  fi
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    log "installing redis-server (Debian package redis-server) for the shared-state tests"
    apt_install redis-server
  fi
  if ! command -v buildah >/dev/null; then
    log "installing buildah (Debian package buildah) for the container image test"
    apt_install buildah
  fi
  if ! command -v prometheus >/dev/null; then
    log "installing prometheus (Debian package prometheus) for the dashboard test"
    apt_install prometheus
  fi
  VENV="$CACHE/venv"
  # anthropic 0.77 is the first with `output_config` (structured output), which the tests send;
  # the tests also drive openai's `responses.compact` and `responses.input_tokens.count`, which
  # a venv made before those methods existed lacks: it is upgraded (within the bounds).
  if ! "$VENV/bin/python" -c 'from openai.types.responses import CompactedResponse, InputTokenCountResponse; from anthropic.types import OutputConfigParam' 2>/dev/null; then
    log "creating $VENV with the openai and anthropic SDKs"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
    "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade 'openai>=1.40,<4' 'anthropic>=0.77,<1'
  fi
  # The deployment files' validators: Kubernetes schemas, and the compose schema.
  if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/check-jsonschema" ]; then
    log "installing kubernetes-validate and check-jsonschema into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate>=1.31,<2' 'check-jsonschema>=0.29,<1'
  fi
fi
