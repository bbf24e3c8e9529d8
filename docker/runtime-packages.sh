#!/usr/bin/env bash
# Prints the packages (dpkg) that own the shared libraries an executable loads, one a line.
# The runtime stage of docker/Dockerfile installs exactly these, whatever they are called in
# the base image's release (libspdlog1.10 on Debian 12, libspdlog1.12 on Ubuntu 24.04,
# cuda-cudart-13-0 and libcublas-13-0 in the CUDA images, ...).
#   usage: docker/runtime-packages.sh EXECUTABLE
set -euo pipefail
exe=$1
libs=$(ldd "$exe")
if grep -q 'not found' <<<"$libs"; then
  echo "$libs" >&2
  echo "runtime-packages: $exe needs libraries that are not installed" >&2
  exit 1
fi
awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"$libs" | while read -r lib; do
  real=$(readlink -f "$lib")
  # Match on the last folder and the file name: /lib and /usr/lib are one folder on merged-/usr
  # systems, but dpkg knows each file under the path its package ships.
  if ! owners=$(dpkg -S "*/$(basename "$(dirname "$real")")/$(basename "$real")" 2>/dev/null); then
    echo "runtime-packages: no package owns $real ($lib)" >&2
    exit 1
  fi
  # "pkg1, pkg2:amd64: /path" -> pkg1, pkg2
  grep -v '^diversion' <<<"$owners" | sed 's/: .*//' | tr ',' '\n' | sed 's/^ *//; s/:.*//'
done | sort -u
