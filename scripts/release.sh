#!/usr/bin/env bash
# Builds the release binary and splits its debug information off:
#   dist/steward        stripped, with a .gnu_debuglink to the file below
#   dist/steward.debug  the debug info (symbols, line tables) for gdb, perf and backtraces
# plus shell completions and man pages generated from the binary itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/steward-target}"
cargo build --release --locked --bin steward
rm -rf dist && mkdir -p dist/completions dist/man
cp "$CARGO_TARGET_DIR/release/steward" dist/steward
objcopy --only-keep-debug dist/steward dist/steward.debug
strip --strip-debug --strip-unneeded dist/steward
objcopy --add-gnu-debuglink=dist/steward.debug dist/steward
for shell in bash zsh fish; do dist/steward completions "$shell" > "dist/completions/steward.$shell"; done
dist/steward man --out dist/man
cp LICENSE packaging/steward.service dist/
ls -l dist dist/man | head -40
