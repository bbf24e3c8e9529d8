#!/usr/bin/env bash
# Installs what arbor needs to build, from Debian 12 packages, when it is missing.
# Idempotent: a machine that has everything runs no apt command at all.
# The CUDA backend is built when a CUDA Toolkit (nvcc) is found — in PATH or in
# /usr/local/cuda — and skipped otherwise; this script does not install CUDA.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git clang-format
  libcpp-httplib-dev nlohmann-json3-dev libsentencepiece-dev libspdlog-dev libfmt-dev
  catch2 libcli11-dev libpcre2-dev
  clang libclang-rt-14-dev libomp-dev curl jq  # scripts/fuzz.sh (libFuzzer), tests/e2e
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Node.js runs the end-to-end tests with the official `openai` client. Check the commands,
# not the packages: a machine may have Node.js from elsewhere (its npm is then bundled).
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
      echo "setup: ${missing[*]} must be installed; run this script as root (or install sudo)" >&2
      exit 1
    fi
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all build dependencies are installed"
fi
