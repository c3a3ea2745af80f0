#!/usr/bin/env bash
# The main job, from a fresh machine: installs what it needs, builds dealbridge in
# release mode, and runs `dealbridge demo` (embedded emulators, SQLite, the
# default rules). Extra arguments go to `dealbridge demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 wasm32-unknown-unknown >/dev/null
cargo run --release --locked -p dealbridge -- demo "$@"
