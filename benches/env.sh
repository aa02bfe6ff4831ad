# Sourced by the benchmark scripts, from the repository root: the root, and the build cache
# shared with scripts/ (CARGO_TARGET_DIR under ~/.cache/switchyard unless set).
ROOT="$PWD"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
