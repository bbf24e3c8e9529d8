#!/usr/bin/env bash
# End-to-end test of `arbor serve` through curl (CPU backend, demo model, --api-key):
#   1. `curl -N` streams a completion whose prompt is a long document (as many tokens as the
#      demo model's 2048-token context leaves after max_tokens); every SSE event is
#      `data: {json}` + a blank line, one finish_reason, `data: [DONE]` last, the text equals
#      the non-streamed greedy completion;
#   2. while another stream runs on its own connection: malformed JSON, wrong types, a body
#      over --max-request-bytes, a too-long prompt, a bad / missing API key, an unknown model
#      and an unknown route each get their status and OpenAI error JSON, and the concurrent
#      stream completes intact (its text equals the same greedy request made alone).
# Usage: curl_test.sh ARBOR
set -euo pipefail
arbor=${1:?usage: curl_test.sh ARBOR}
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "curl_test: $tool is required" >&2; exit 1; }
done
work=$(mktemp -d)
server_pid=""
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then kill -9 "$server_pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT
failures=0
ok() { echo "ok - $*"; }
not_ok() {
  echo "not ok - $*"
  failures=$((failures + 1))
}

key=curl-test-key
max_bytes=131072
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
  echo $((20000 + RANDOM % 20000)))
"$arbor" serve --device cpu --port "$port" --served-model-name demo --api-key "$key" \
  --max-request-bytes "$max_bytes" 2>"$work/server.log" &
server_pid=$!
base="http://127.0.0.1:$port"
for i in $(seq 300); do
  curl -sf "$base/health" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.1
done
curl -sf "$base/health" >/dev/null || { echo "arbor serve did not become healthy"; exit 1; }
auth=(-H "Authorization: Bearer $key" -H 'Content-Type: application/json')

# POST BODY_FILE PATH [curl args...] → prints the HTTP status; the body goes to $work/out.json
post() {
  local file=$1 path=$2
  shift 2
  curl -s -o "$work/out.json" -w '%{http_code}' "$@" --data-binary "@$file" "$base$path"
}

# --- a long document: repeat a paragraph until the prompt nearly fills the context ---
max_model_len=$(curl -s "${auth[@]}" "$base/v1/models" | jq '.data[0].max_model_len')
max_tokens=64
paragraph="The jury said it did find that many of the city's election laws were outmoded or \
inadequate and often ambiguous. It recommended that legislators act to have these laws \
studied and revised, and that the county's purchasing department be reorganized. "
: >"$work/doc.txt"
tokens=0
while :; do
  cp "$work/doc.txt" "$work/doc.next"
  printf '%s' "$paragraph" >>"$work/doc.next"
  jq -Rs '{prompt: (. + "\n\nQuestion: what did the jury say?\nAnswer:")}' "$work/doc.next" \
    >"$work/tok.json"
  n=$(curl -s "${auth[@]}" --data-binary @"$work/tok.json" "$base/tokenize" | jq .count)
  ((n + max_tokens <= max_model_len)) || break
  mv "$work/doc.next" "$work/doc.txt"
  tokens=$n
done
echo "# document: $(wc -c <"$work/doc.txt") bytes, $tokens prompt tokens, max_model_len $max_model_len"
jq -Rs --argjson mt "$max_tokens" '{model: "demo", stream: true, max_tokens: $mt,
    temperature: 0, ignore_eos: true,
    prompt: (. + "\n\nQuestion: what did the jury say?\nAnswer:")}' "$work/doc.txt" \
  >"$work/long_stream.json"
jq '.stream = false' "$work/long_stream.json" >"$work/long_plain.json"

# Checks an SSE transcript; writes the concatenated text, as a JSON string, to FILE.text.
# Returns 1 when it is malformed.
check_sse() {
  local sse=$1 want_tokens=$2
  jq -n --rawfile s "$sse" --argjson want "$want_tokens" '
    ($s | split("\n\n")) as $ev
    | if ($ev | last) != "" then error("the stream does not end with a blank line") else . end
    | ($ev[:-1]) as $ev
    | if ($ev | last) != "data: [DONE]" then error("the last event is not data: [DONE]") else . end
    | ($ev[:-1] | map(if startswith("data: ") then .[6:] | fromjson
                      else error("not a data: event: " + .) end)) as $chunks
    | if ($chunks | length) < 2 then error("too few chunks") else . end
    | if ($chunks | map(.object == "text_completion") | all) | not then error("object") else . end
    | if ($chunks | map(.id) | unique | length) != 1 then error("ids differ") else . end
    | ([$chunks[].choices[] | select(.finish_reason != null)] | length) as $f
    | if $f != 1 then error("\($f) finish_reason chunks") else . end
    | ([$chunks[].choices[] | select(.finish_reason != null)][0].finish_reason) as $r
    | if $r != "length" then error("finish_reason " + $r) else . end
    | [$chunks[].choices[].text] | join("")' >"$sse.text" 2>"$sse.err" ||
    { cat "$sse.err"; return 1; }
  # one chunk per generated token at most (held-back text may merge)
  local n
  n=$(grep -c '^data: {' "$sse")
  ((n <= want_tokens + 1)) || { echo "$n chunks for $want_tokens tokens"; return 1; }
}

# 1. the long document, streamed with curl -N
start=$(date +%s%N)
curl -sN "${auth[@]}" --data-binary @"$work/long_stream.json" "$base/v1/completions" \
  >"$work/long.sse"
ms=$((($(date +%s%N) - start) / 1000000))
if check_sse "$work/long.sse" "$max_tokens"; then
  ok "curl -N streams a $tokens-token document: SSE chunks, one finish_reason, data: [DONE] (${ms} ms)"
else
  not_ok "curl -N stream of the long document"
fi
status=$(post "$work/long_plain.json" /v1/completions "${auth[@]}")
if [[ $status == 200 ]] && [[ "$(jq '.choices[0].text' "$work/out.json")" == "$(cat "$work/long.sse.text")" ]] &&
  [[ $(jq '.usage.prompt_tokens' "$work/out.json") == "$tokens" ]]; then
  ok "the streamed text equals the non-streamed greedy completion ($tokens prompt tokens)"
else
  not_ok "streamed vs non-streamed text (status $status)"
fi

# 2. errors while a stream runs on another connection
concurrent_tokens=1200
jq -n --argjson mt "$concurrent_tokens" '{model: "demo", stream: true, max_tokens: $mt,
    temperature: 0, ignore_eos: true, prompt: "It was a cold morning, and"}' >"$work/bg.json"
curl -sN "${auth[@]}" --data-binary @"$work/bg.json" "$base/v1/completions" >"$work/bg.sse" &
bg_pid=$!
# wait for its first chunk, so the errors below arrive while it streams
for i in $(seq 200); do
  [[ -s $work/bg.sse ]] && break
  sleep 0.05
done

# expect NAME STATUS CODE BODY_FILE [curl args...]: status and OpenAI error JSON
expect() {
  local name=$1 want=$2 code=$3 file=$4
  shift 4
  local got
  got=$(post "$file" /v1/completions "$@") || got="curl failed"
  if [[ $got == "$want" ]] && jq -e --arg code "$code" '
      (.error | type == "object") and (.error.message | type == "string") and
      (.error.type | type == "string") and (.error | has("param")) and (.error | has("code")) and
      ($code == "" or .error.code == $code)' "$work/out.json" >/dev/null 2>&1; then
    ok "$name: $got $(jq -c '.error | {type, code, param}' "$work/out.json")"
  else
    not_ok "$name: want $want${code:+ $code}, got $got: $(head -c 300 "$work/out.json" 2>/dev/null)"
  fi
}
printf '{"model": "demo", "prompt": "The jury said", ' >"$work/malformed.json"
expect "malformed JSON" 400 invalid_json "$work/malformed.json" "${auth[@]}"
echo '[1, 2, 3]' >"$work/array.json"
expect "a JSON array body" 400 invalid_json "$work/array.json" "${auth[@]}"
echo '{"model": "demo", "prompt": 42}' >"$work/type1.json"
expect "prompt of the wrong type" 400 "" "$work/type1.json" "${auth[@]}"
jq -e '.error.param == "prompt"' "$work/out.json" >/dev/null || not_ok "param is not prompt"
echo '{"model": "demo", "prompt": "x", "max_tokens": "many"}' >"$work/type2.json"
expect "max_tokens of the wrong type" 400 "" "$work/type2.json" "${auth[@]}"
jq -e '.error.param == "max_tokens"' "$work/out.json" >/dev/null || not_ok "param is not max_tokens"
echo '{"model": "demo", "prompt": "x", "temperature": -3}' >"$work/range.json"
expect "temperature out of range" 400 "" "$work/range.json" "${auth[@]}"
head -c $((max_bytes + 4096)) /dev/zero | tr '\0' 'a' | jq -Rs '{model: "demo", prompt: .}' \
  >"$work/huge.json"
expect "a body over --max-request-bytes ($max_bytes)" 413 request_too_large "$work/huge.json" \
  "${auth[@]}"
# a prompt longer than the context: the document four times (under the byte limit)
jq -Rs '{model: "demo", max_tokens: 16, prompt: (. + . + . + .)}' "$work/doc.txt" >"$work/long4.json"
expect "a prompt over the context" 400 context_length_exceeded "$work/long4.json" "${auth[@]}"
jq -Rs --argjson m "$max_model_len" '{model: "demo", max_tokens: $m, prompt: .}' "$work/doc.txt" \
  >"$work/long_mt.json"
expect "prompt + max_tokens over the context" 400 context_length_exceeded "$work/long_mt.json" \
  "${auth[@]}"
echo '{"model": "demo", "prompt": "x"}' >"$work/ok.json"
expect "a bad API key" 401 invalid_api_key "$work/ok.json" -H "Authorization: Bearer nope" \
  -H 'Content-Type: application/json'
expect "no API key" 401 invalid_api_key "$work/ok.json" -H 'Content-Type: application/json'
echo '{"model": "gpt-9", "prompt": "x"}' >"$work/model.json"
expect "an unknown model" 404 model_not_found "$work/model.json" "${auth[@]}"
status=$(curl -s -o "$work/out.json" -w '%{http_code}' "${auth[@]}" "$base/v1/nope")
if [[ $status == 404 ]] && jq -e '.error.code == "not_found"' "$work/out.json" >/dev/null; then
  ok "an unknown route: 404"
else
  not_ok "an unknown route: got $status"
fi
if kill -0 "$bg_pid" 2>/dev/null; then
  ok "the concurrent stream was still running after the errors"
else
  echo "# note: the concurrent stream finished before the last error request"
fi

wait "$bg_pid" || not_ok "the concurrent curl failed"
if check_sse "$work/bg.sse" "$concurrent_tokens"; then
  jq '.stream = false' "$work/bg.json" >"$work/bg_plain.json"
  status=$(post "$work/bg_plain.json" /v1/completions "${auth[@]}")
  if [[ $status == 200 ]] && [[ "$(jq '.choices[0].text' "$work/out.json")" == "$(cat "$work/bg.sse.text")" ]]; then
    ok "the concurrent stream completed intact ($concurrent_tokens tokens, same text as alone)"
  else
    not_ok "the concurrent stream's text differs from the same request alone (status $status)"
  fi
else
  not_ok "the concurrent stream is broken"
fi

kill -TERM "$server_pid"
if wait "$server_pid"; then ok "SIGTERM: exit 0"; else not_ok "SIGTERM: exit $?"; fi
server_pid=""
if ((failures)); then
  echo "--- server log (tail) ---"
  tail -n 40 "$work/server.log"
  echo "$failures failed"
  exit 1
fi
echo "all passed"
