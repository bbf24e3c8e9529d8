#!/usr/bin/env bash
# First README command: install what is missing, build, and generate text with the
# embedded demo model (a small Llama trained on the Brown corpus) on the CPU.
# Arguments are passed to `arbor generate` (e.g. --prompt "..." --max-tokens 200).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
if (($# == 0)); then
  set -- --prompt "The jury said" --max-tokens 120
fi
exec "${BUILD_DIR:-$root/build}/server/arbor" generate "$@"
