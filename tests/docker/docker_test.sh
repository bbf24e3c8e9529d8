#!/usr/bin/env bash
# The Docker deployment, for real, with no registry image: builds a Debian 12 base with
# debootstrap, builds the CPU-only image from docker/Dockerfile on it, serves the built-in
# demo model with docker-compose (docker/compose.cpu.yaml, host network, loopback only),
# checks /health, the image's HEALTHCHECK, the non-root user, the API key, a completion and a
# streamed completion, a clean SIGTERM exit, and validates the GPU file docker/compose.yaml.
#
# Needs root (or sudo): installs Debian's docker.io, docker-compose and debootstrap when
# missing and runs its own dockerd (own socket, data-root, exec-root and pidfile; no bridge,
# no iptables), stopped again on exit. Run by scripts/test.sh; alone:
#   tests/docker/docker_test.sh
# Environment: ARBOR_DOCKER_TEST_DIR (default build/docker-test: the debootstrap tarball and
# the daemon's data, kept so reruns are faster), ARBOR_DOCKER_TEST_PORT (default: a free
# port), ARBOR_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${ARBOR_DOCKER_TEST_DIR:-$root/build/docker-test}
mirror=${ARBOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
base_image=arbor-test/debian:bookworm
image=arbor-test:cpu
project=arbor-docker-test
api_key="docker-test-key"
# Debian's tools, by path: /usr/local/bin/docker may be another, newer client.
docker=/usr/bin/docker
dockerd=/usr/sbin/dockerd
compose_bin=/usr/bin/docker-compose

t_start=$SECONDS
passed=0
log() { echo "docker-test: $*"; }
pass() {
  passed=$((passed + 1))
  echo "docker-test: ok: $*"
}
fail() {
  echo "docker-test: FAIL: $*" >&2
  exit 1
}
elapsed() { echo "$((SECONDS - $1)) s"; }

# --- packages -------------------------------------------------------------------------------
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || fail "needs root (dockerd, debootstrap), and there is no sudo"
  sudo="sudo"
fi
missing=()
for p in docker.io docker-compose debootstrap curl python3; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
log "$("$docker" --version); $("$compose_bin" --version); debootstrap $(dpkg-query -W -f='${Version}' debootstrap)"

# --- the GPU compose file (no GPU needed to validate it) --------------------------------------
gpu_config=$(ARBOR_MODEL_DIR="$root/models/demo" ARBOR_API_KEY=secret \
  "$compose_bin" -f "$root/docker/compose.yaml" config) ||
  fail "docker-compose -f docker/compose.yaml config"
for want in "driver: nvidia" "- gpu" "count: all" "$root/models/demo:/models/model:ro" \
  "ARBOR_API_KEY: secret" "published: 8000" "/health"; do
  grep -qF -- "$want" <<<"$gpu_config" || fail "docker/compose.yaml config lacks '$want'"
done
pass "docker/compose.yaml is valid (GPU reservation, model volume, API key, port, healthcheck)"
if (env -u ARBOR_MODEL_DIR "$compose_bin" -f "$root/docker/compose.yaml" config >/dev/null 2>&1); then
  fail "docker/compose.yaml accepted a missing ARBOR_MODEL_DIR"
fi
pass "docker/compose.yaml refuses to start without ARBOR_MODEL_DIR"

# --- our own dockerd --------------------------------------------------------------------------
mkdir -p "$work"
# Short paths for the unix sockets (at most 108 bytes), whatever the checkout's path.
run=$(mktemp -d /tmp/arbor-docker-test.XXXXXX)
export DOCKER_HOST="unix://$run/docker.sock"
dockerd_pid=""
compose_up=""
compose() { "$compose_bin" -p "$project" -f "$root/docker/compose.cpu.yaml" "$@"; }
cleanup() {
  local rc=$?
  set +e
  if [[ -n $compose_up ]]; then
    if ((rc != 0)); then
      log "container log (last 40 lines):"
      compose logs --no-color --tail 40
    fi
    compose down --timeout 5 >/dev/null 2>&1
  fi
  if [[ -n $dockerd_pid ]] && kill -0 "$dockerd_pid" 2>/dev/null; then
    log "stopping dockerd (pid $dockerd_pid)"
    $sudo kill -TERM "$dockerd_pid"
    for _ in $(seq 60); do
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      log "dockerd did not stop in 30 s: killing it"
      $sudo kill -KILL "$dockerd_pid"
    fi
  fi
  # dockerd leaves its bind mount of the host's network namespace (exec-root/netns/default).
  awk -v dir="$run/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r mnt; do $sudo umount "$mnt"; done
  if ((rc != 0)) && [[ -f $work/dockerd.log ]]; then
    log "dockerd log (last 20 lines):"
    tail -n 20 "$work/dockerd.log"
  fi
  $sudo rm -rf "$run"
  if ((rc == 0)); then
    log "done in $(elapsed "$t_start")"
  else
    log "FAILED after $(elapsed "$t_start") (exit $rc)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting dockerd (data-root $work/data-root, socket $run/docker.sock)"
# No bridge and no iptables rules: every container here uses the host's network, so the
# host's firewall and interfaces stay as they are.
$sudo "$dockerd" --data-root "$work/data-root" --exec-root "$run/exec" \
  --pidfile "$run/dockerd.pid" --host "$DOCKER_HOST" \
  --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
  >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for i in $(seq 120); do
  if "$docker" version >/dev/null 2>&1; then break; fi
  if ! kill -0 "$dockerd_pid" 2>/dev/null; then
    tail -n 30 "$work/dockerd.log" >&2
    dockerd_pid=""
    fail "dockerd exited at start: this machine cannot run dockerd (log above)"
  fi
  ((i < 120)) || fail "dockerd did not answer within 60 s"
  sleep 0.5
done
pass "dockerd $("$docker" version -f '{{.Server.Version}}') is up ($("$docker" info -f '{{.Driver}}'), cgroup v$("$docker" info -f '{{.CgroupVersion}}'))"

# --- the base image: Debian 12 from the Debian archive ---------------------------------------
base_tar=$work/debian-bookworm-minbase.tar
if [[ ! -s $base_tar ]]; then
  t=$SECONDS
  log "debootstrap --variant=minbase bookworm from $mirror"
  rootfs=$run/rootfs
  if ! $sudo debootstrap --variant=minbase bookworm "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    fail "debootstrap (log: $work/debootstrap.log)"
  fi
  $sudo rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  $sudo tar --numeric-owner -C "$rootfs" -cf "$base_tar.part" .
  mv "$base_tar.part" "$base_tar"
  $sudo rm -rf "$rootfs"
  "$docker" rmi "$base_image" >/dev/null 2>&1 || true
  log "debootstrap took $(elapsed "$t") ($(du -h "$base_tar" | cut -f1))"
else
  log "reusing $base_tar"
fi
if ! "$docker" image inspect "$base_image" >/dev/null 2>&1; then
  "$docker" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' "$base_tar" "$base_image" >/dev/null
fi
"$docker" run --rm --network host "$base_image" grep -q 'VERSION_ID="12"' /etc/os-release ||
  fail "the imported base image does not run"
pass "base image $base_image (debootstrap, docker import) runs"

# --- the CPU image ----------------------------------------------------------------------------
t=$SECONDS
log "docker build -f docker/Dockerfile --build-arg ARBOR_CUDA=OFF (log: $work/docker-build.log)"
# The whole output goes to the log; each step is shown with the time it started at.
show_steps() {
  local line
  while IFS= read -r line; do
    printf '%s\n' "$line" >>"$work/docker-build.log"
    case $line in
      "Step "* | "runtime packages:"*) printf '  %4d s  %s\n' "$((SECONDS - t))" "${line:0:110}" ;;
    esac
  done
}
: >"$work/docker-build.log"
if ! "$docker" build --network host -f "$root/docker/Dockerfile" -t "$image" \
  --build-arg BUILD_IMAGE="$base_image" --build-arg RUNTIME_IMAGE="$base_image" \
  --build-arg ARBOR_CUDA=OFF "$root" 2>&1 | show_steps; then
  tail -n 40 "$work/docker-build.log" >&2
  fail "docker build"
fi
pass "image $image built in $(elapsed "$t") ($(("$("$docker" image inspect -f '{{.Size}}' "$image")" / 1000000)) MB)"
out=$("$docker" run --rm --network host "$image" generate --prompt "The jury said" \
  --max-tokens 8 --seed 1 2>/dev/null) || fail "docker run $image generate"
[[ -n $out ]] || fail "docker run $image generate printed nothing"
pass "docker run $image generate: '$out'"

# --- serve it with docker-compose -------------------------------------------------------------
port=${ARBOR_DOCKER_TEST_PORT:-$(python3 -c \
  'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
base_url=http://127.0.0.1:$port
export ARBOR_IMAGE=$image ARBOR_PORT=$port ARBOR_API_KEY=$api_key ARBOR_HOST=127.0.0.1
log "docker-compose -f docker/compose.cpu.yaml up -d (port $port)"
compose_up=1
compose up -d --no-build || fail "docker-compose up"
container=$(compose ps -q arbor)
[[ -n $container ]] || fail "docker-compose up started no container"

t=$SECONDS
for i in $(seq 240); do
  if curl -fsS -o /dev/null "$base_url/health" 2>/dev/null; then break; fi
  [[ $("$docker" inspect -f '{{.State.Running}}' "$container") == true ]] ||
    fail "the container stopped before it served"
  ((i < 240)) || fail "/health did not answer 200 within 120 s"
  sleep 0.5
done
pass "/health answers 200 after $(elapsed "$t")"
for i in $(seq 60); do
  status=$("$docker" inspect -f '{{.State.Health.Status}}' "$container")
  [[ $status == healthy ]] && break
  ((i < 60)) || fail "docker reports the container '$status', not healthy, after 60 s"
  sleep 1
done
pass "docker's healthcheck reports the container healthy"
uid=$(compose exec -T arbor id -u) || fail "docker-compose exec arbor id -u"
[[ $uid != 0 ]] || fail "the server runs as root"
pass "the server runs as a non-root user (uid $uid)"

code=$(curl -s -o /dev/null -w '%{http_code}' "$base_url/v1/models")
[[ $code == 401 ]] || fail "GET /v1/models without the API key answered $code, not 401"
auth=(-H "Authorization: Bearer $api_key")
curl -fsS "${auth[@]}" "$base_url/v1/models" | grep -q '"id":"demo"' ||
  fail "GET /v1/models does not list the demo model"
pass "ARBOR_API_KEY is enforced (401 without it) and /v1/models lists 'demo'"

body='{"model": "demo", "prompt": "The jury said", "max_tokens": 16, "temperature": 0,
       "ignore_eos": true}'
resp=$(curl -fsS "${auth[@]}" -H 'Content-Type: application/json' -d "$body" \
  "$base_url/v1/completions") || fail "POST /v1/completions"
text=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
assert r["object"] == "text_completion", r
assert r["usage"]["completion_tokens"] == 16, r["usage"]
assert r["choices"][0]["text"], r
print(r["choices"][0]["text"])' "$resp") || fail "unexpected /v1/completions answer: $resp"
pass "POST /v1/completions: 16 tokens: '$text'"

stream=$(curl -fsSN "${auth[@]}" -H 'Content-Type: application/json' \
  -d "${body%\}}, \"stream\": true}" "$base_url/v1/completions") ||
  fail "POST /v1/completions (stream)"
events=$(grep -c '^data: {' <<<"$stream" || true)
last=$(grep '^data: ' <<<"$stream" | tail -n 1)
((events >= 16)) || fail "the stream has $events data events, expected at least 16: $stream"
[[ $last == "data: [DONE]" ]] || fail "the stream does not end with 'data: [DONE]': $last"
streamed=$(grep '^data: {' <<<"$stream" | sed 's/^data: //' | python3 -c '
import json, sys
print("".join(c["text"] for line in sys.stdin for c in json.loads(line)["choices"]))')
[[ $streamed == "$text" ]] || fail "streamed text '$streamed' differs from '$text'"
pass "streamed /v1/completions: $events events, ends with 'data: [DONE]', same text"

log "docker-compose stop (SIGTERM), then down"
compose stop --timeout 30 >/dev/null 2>&1 || fail "docker-compose stop"
exit_code=$("$docker" inspect -f '{{.State.ExitCode}}' "$container")
[[ $exit_code == 0 ]] || fail "arbor exited with $exit_code on SIGTERM, not 0"
compose down --timeout 5 >/dev/null 2>&1 || fail "docker-compose down"
compose_up=""
[[ -z $("$docker" ps -aq --filter "label=com.docker.compose.project=$project") ]] ||
  fail "docker-compose down left containers behind"
pass "SIGTERM: arbor exited 0; docker-compose down removed the service"

echo "docker: $passed passed, 0 failed"
