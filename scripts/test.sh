#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, builds the
# guest components, and runs every test. PostgreSQL tests run when DATABASE_URL
# is set (e.g. postgres://postgres@127.0.0.1:5432/test) and say loudly that they
# were skipped when it is not.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 wasm32-unknown-unknown >/dev/null

if [ -z "${DATABASE_URL:-}" ]; then
  echo "NOTE: DATABASE_URL is not set: the PostgreSQL store tests will be SKIPPED (SQLite runs)." >&2
fi

cargo test --workspace --locked "$@"
