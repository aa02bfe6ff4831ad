# Sourced by scripts/test.sh, scripts/serve.sh and benches/env.sh, from the repository root:
# the cache folder (CACHE) and the build cache (CARGO_TARGET_DIR), both outside the checkout.
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
# Every checkout on a machine shares the build cache, and cargo takes a build to be current when
# the sources are older than it (file times, not contents). After a build in another checkout,
# this one's files would read as built: its tests would run the other checkout's code, and look
# for models and scripts in the other checkout's folder (a path compiled into them). So when the
# checkout changes, this package (not its dependencies) is built again.
build_cache_checkout="$(pwd -P)"
if [ "$(cat "$CARGO_TARGET_DIR/switchyard-checkout" 2>/dev/null)" != "$build_cache_checkout" ]; then
  if [ -d "$CARGO_TARGET_DIR" ]; then
    echo "build cache: last built from another checkout; building this package again" >&2
    cargo clean --locked --quiet --package switchyard
    cargo clean --locked --quiet --package switchyard --release
  fi
  mkdir -p "$CARGO_TARGET_DIR"
  printf '%s\n' "$build_cache_checkout" > "$CARGO_TARGET_DIR/switchyard-checkout"
fi
unset build_cache_checkout
