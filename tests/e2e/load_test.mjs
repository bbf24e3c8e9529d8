// Load test of `arbor serve` on loopback (CPU backend, demo model): 240 concurrent streaming
// clients, a third of which disconnect mid-stream (some before their first token), then:
// every KV block is free and nothing is running or waiting (checked through /metrics), every
// HTTP request was counted exactly once, and the server still answers a greedy completion
// with the same text as before the load. Usage: node load_test.mjs ARBOR
//
// Server settings: --http-threads 320, so every stream gets a worker thread at once (each
// open streaming connection holds one; the default 64 would leave the rest waiting in the
// HTTP accept queue); --max-queued-requests 1024 and --max-num-seqs 256 (the defaults) admit
// all 240 streams into one batch without 429s; --kv-cache-tokens 4096 (256 blocks of 16)
// is less than the 240 streams can grow to, so the scheduler also preempts and recomputes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';

const [arbor] = process.argv.slice(2);
if (!arbor) throw new Error('usage: load_test.mjs ARBOR');
const CLIENTS = Number(process.env.LOAD_CLIENTS ?? 240);  // env overrides: manual runs
const HTTP_THREADS = process.env.LOAD_HTTP_THREADS ?? '320';
const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

const port = await new Promise((resolve) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => resolve(p));
  });
});
let serverLog = '';
const server = spawn(arbor, ['serve', '--device', 'cpu', '--port', String(port),
                             '--served-model-name', 'demo', '--http-threads', HTTP_THREADS,
                             '--max-queued-requests', '1024', '--max-num-seqs', '256',
                             '--kv-cache-tokens', '4096'],
                     { stdio: ['ignore', 'ignore', 'pipe'] });
server.stderr.on('data', (d) => { serverLog = (serverLog + d).slice(-20000); });
const exited = new Promise((resolve) => server.on('exit', (code, sig) => resolve(code ?? sig)));
const fail = (msg) => {
  console.log(`not ok - ${msg}\n--- server log (tail) ---\n${serverLog.slice(-4000)}`);
  server.kill('SIGKILL');
  process.exit(1);
};
const watchdog = setTimeout(() => fail('load test did not finish within 150 s'), 150_000);

const base = `http://127.0.0.1:${port}`;
for (let i = 0;; ++i) {
  try {
    if ((await fetch(`${base}/health`)).ok) break;
  } catch {}
  if (i > 300) fail('arbor serve did not become healthy within 30 s');
  await new Promise((r) => setTimeout(r, 100));
}

async function completion(body) {
  const r = await fetch(`${base}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: 'demo', ...body }) });
  const j = await r.json();
  assert.equal(r.status, 200, JSON.stringify(j));
  return j;
}
const probe = { prompt: 'The jury said', max_tokens: 24, temperature: 0, ignore_eos: true };
const before = (await completion(probe)).choices[0].text;
assert.ok(before.length > 0);

async function metrics() {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = {};
  for (const line of text.split('\n')) {
    const g = /^(arbor:[a-z0-9_]+)\{([^}]*)\} (\S+)$/.exec(line);
    if (!g) continue;
    const reason = /finished_reason="(\w+)"/.exec(g[2]);
    m[reason ? `${g[1]}:${reason[1]}` : g[1]] = Number(g[3]);
  }
  return m;
}

// Reads an SSE stream; `stopAfter` chunks (>= 0) disconnects after that many.
async function stream(i) {
  const mode = i % 3 === 0 ? 'disconnect' : 'complete';
  const stopAfter = mode === 'disconnect' ? (i % 4) : -1;  // 0: before the first chunk
  const words = ['The jury said', 'It was a cold morning, and', 'In the city', 'He'];
  const body = {
    model: 'demo', stream: true, stream_options: { include_usage: true },
    // Shared prefixes exercise the prefix cache; the suffix makes each prompt distinct.
    prompt: `${words[i % words.length]} ${'and so on '.repeat(i % 7)}(${i})`,
    max_tokens: 8 + (i % 25), temperature: i % 2 ? 0.8 : 0, seed: i, ignore_eos: i % 5 !== 0,
    n: i % 17 === 0 ? 2 : 1,
  };
  const ac = new AbortController();
  const sent = Date.now();
  const r = await fetch(`${base}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body), signal: ac.signal });
  assert.equal(r.status, 200, `client ${i}: status ${r.status}`);
  assert.equal(r.headers.get('content-type'), 'text/event-stream');
  headersMs.push(Date.now() - sent);
  if (stopAfter === 0) {
    ac.abort();
    return { mode, disconnected: true };
  }
  const decoder = new TextDecoder();
  let buf = '', chunks = 0, done = false, usage = null;
  const text = Array(body.n).fill(''), finishes = Array(body.n).fill(0);
  try {
    for await (const part of r.body) {
      buf += decoder.decode(part, { stream: true });
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, end);
        buf = buf.slice(end + 2);
        assert.ok(ev.startsWith('data: '), `client ${i}: bad SSE event ${JSON.stringify(ev)}`);
        const data = ev.slice(6);
        assert.ok(!done, `client ${i}: data after [DONE]`);
        if (data === '[DONE]') { done = true; continue; }
        const c = JSON.parse(data);
        if (c.usage) usage = c.usage;
        for (const ch of c.choices) {
          text[ch.index] += ch.text;
          if (ch.finish_reason) ++finishes[ch.index];
        }
        if (++chunks === stopAfter) {
          ac.abort();
          return { mode, disconnected: true };
        }
      }
    }
  } catch (e) {
    if (e.name === 'AbortError') return { mode, disconnected: true };
    throw e;
  }
  assert.ok(done, `client ${i}: no [DONE] (mode ${mode})`);
  assert.equal(buf, '', `client ${i}: trailing bytes`);
  for (let k = 0; k < body.n; ++k) assert.equal(finishes[k], 1, `client ${i}: finish_reason count`);
  assert.ok(usage && usage.completion_tokens >= body.n, `client ${i}: usage ${JSON.stringify(usage)}`);
  if (body.ignore_eos) assert.equal(usage.completion_tokens, body.n * body.max_tokens);
  return { mode, disconnected: false };
}

const headersMs = [];  // request sent → response headers (connect + admission)
const before_m = await metrics();
const results = await Promise.allSettled(Array.from({ length: CLIENTS }, (_, i) => stream(i)));
const errors = results.filter((r) => r.status === 'rejected');
if (errors.length) fail(`${errors.length} clients failed, e.g. ${errors[0].reason.stack}`);
const disconnected = results.filter((r) => r.value.disconnected).length;
headersMs.sort((a, b) => a - b);
console.log(`ok - ${CLIENTS} concurrent streams (${disconnected} disconnected mid-stream) ` +
            `after ${elapsed()}; response headers after ${headersMs[headersMs.length >> 1]} ms ` +
            `(median), ${headersMs[headersMs.length - 1]} ms (max)`);

// Everything drains: aborts free their blocks at once, handlers return.
let m;
for (let i = 0;; ++i) {
  m = await metrics();
  if (m['arbor:num_requests_running'] === 0 && m['arbor:num_requests_waiting'] === 0 &&
      m['arbor:num_requests_unfinished'] === 0 && m['arbor:kv_cache_used_blocks'] === 0 &&
      m['arbor:kv_cache_usage_perc'] === 0 && m['arbor:http_requests_in_flight'] === 0) break;
  if (i > 150) fail(`the server did not drain within 15 s: ${JSON.stringify(m)}`);
  await new Promise((r) => setTimeout(r, 100));
}
assert.equal(m['arbor:kv_cache_free_blocks'], m['arbor:kv_cache_total_blocks']);
console.log(`ok - drained: no running/waiting requests, 0 of ${m['arbor:kv_cache_total_blocks']} ` +
            `KV blocks in use, ${m['arbor:num_preemptions_total']} preemptions (${elapsed()})`);

// Each HTTP request is counted once (n = 2 ones included), with its finish reason.
const finished = (x) => ['stop', 'length', 'abort', 'error']
  .reduce((s, r) => s + (x[`arbor:request_success_total:${r}`] ?? 0), 0);
assert.equal(finished(m) - finished(before_m), CLIENTS);
assert.equal(m['arbor:e2e_request_latency_seconds_count'] -
             before_m['arbor:e2e_request_latency_seconds_count'], CLIENTS);
assert.equal(m['arbor:request_success_total:error'], 0);
assert.ok(m['arbor:request_success_total:abort'] - before_m['arbor:request_success_total:abort'] <=
          disconnected);
console.log('ok - every request counted once in the metrics, none failed');

const after = (await completion(probe)).choices[0].text;
assert.equal(after, before, 'greedy text changed after the load');
console.log('ok - a greedy completion after the load equals the one before');

clearTimeout(watchdog);
server.kill('SIGTERM');
const code = await exited;
assert.equal(code, 0, `exit code ${code}`);
console.log(`ok - SIGTERM exit 0; ${elapsed()} in all`);
