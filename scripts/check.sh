#!/usr/bin/env bash
# Every check CI runs: lint (ruff), types (mypy), import loops and layers, then the tests.
#   scripts/check.sh [pytest arguments...]
# The static checks all run and report; the tests run only when all of them pass.
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
failed=()

step() {
  local name=$1
  shift
  echo "== $name"
  "$@" || failed+=("$name")
}

step ruff "$py" -m ruff check .
step mypy "$py" -m mypy
step imports "$py" scripts/check_imports.py
if [ "${#failed[@]}" -gt 0 ]; then
  echo "check: ${failed[*]} failed; fix them before the tests run" >&2
  exit 1
fi
echo "== pytest"
exec "$py" -m pytest "$@"
