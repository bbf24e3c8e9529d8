#!/usr/bin/env bash
# First README command: install what is missing, build, and serve the embedded demo model (a
# small Llama trained on the Brown corpus) on 127.0.0.1:8000 through the OpenAI-compatible
# API, on the GPU when one is visible, else on the CPU. Ctrl-C stops the server.
#   scripts/demo.sh [arbor serve flags]         e.g. --port 8080 --host 0.0.0.0
#   scripts/demo.sh generate [arbor generate flags]   one completion, printed, then exit
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
arbor="${BUILD_DIR:-$root/build}/server/arbor"

if [[ "${1:-}" == generate ]]; then
  shift
  if (($# == 0)); then
    set -- --prompt "The jury said" --max-tokens 120
  fi
  exec "$arbor" generate "$@"
fi
[[ "${1:-}" == serve ]] && shift

cat <<'MSG'
The demo model is served at the address printed below (default http://127.0.0.1:8000;
Ctrl-C stops it). From another terminal:
  curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \
    -d '{"model": "demo", "prompt": "The jury said", "max_tokens": 40}'
MSG
exec "$arbor" serve "$@"
