# Shell helpers for the device scripts (sourced): wait for a server, stream one request
# and measure it from the client's side, stop a server and check that it exits.
# ask() writes $OUT/stream_LABEL.txt.

wait_health() {  # port, seconds
  for _ in $(seq "$2"); do
    curl -sf "localhost:$1/health" >/dev/null && return 0
    sleep 1
  done
  return 1
}
# Streams one request; every line stamped with its arrival time, so the time to the first
# token and the decode rate come from the client's side.
ask() {  # port, body, label, seconds at most
  local t0
  t0=$(date +%s.%N)
  curl -sN --max-time "$4" "localhost:$1/v1/completions" -H 'Content-Type: application/json' -d @"$2" |
    while IFS= read -r line; do [[ -n $line ]] && echo "$(date +%s.%N) $line"; done \
      >"$OUT/stream_$3.txt"
  python3 - "$OUT/stream_$3.txt" "$t0" "$3" <<'PY'
import json, sys
lines = [l.split(" ", 1) for l in open(sys.argv[1])]
t0 = float(sys.argv[2])
chunks = [(float(t), json.loads(d[6:])) for t, d in lines if d.startswith("data: {")]
text = [(t, c) for t, c in chunks if c.get("choices") and c["choices"][0].get("text")]
usage = [c["usage"] for _, c in chunks if c.get("usage")]
if not text:
    print(f"-- {sys.argv[3]}: no tokens streamed; last lines:", lines[-3:])
    sys.exit()
ttft, last = text[0][0] - t0, text[-1][0]
rate = (len(text) - 1) / (last - text[0][0]) if len(text) > 1 else 0
print(f"-- {sys.argv[3]}: {len(text)} text chunks, TTFT {ttft:.1f} s, decode {rate:.1f} tok/s "
      f"(client side), usage {usage[-1] if usage else None}")
print("   text:", repr("".join(c["choices"][0]["text"] for _, c in text)[:80]))
PY
}
# Waits up to 60 s for process PID to exit (then kills it) and prints its exit status.
await_exit() {  # pid, label
  timeout 60 tail --pid="$1" -f /dev/null || {
    echo "!! $2 still running 60 s after it was told to stop"
    kill -KILL "$1"
  }
  wait "$1"
  echo "$2 exit $?"
}
stop_server() {  # pid, label
  kill -TERM "$1"
  await_exit "$1" "$2"
}
