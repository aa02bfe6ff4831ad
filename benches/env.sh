# Sourced by the benchmark scripts, from the repository root: the root, and the build cache
# shared with scripts/ (scripts/build-cache.sh: CARGO_TARGET_DIR under ~/.cache/switchyard unless set).
ROOT="$PWD"
source scripts/build-cache.sh
