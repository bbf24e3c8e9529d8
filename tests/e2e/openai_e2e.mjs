// End-to-end test of `arbor serve` with the official `openai` npm client: the server runs as
// a user would start it (the built binary, CPU backend, demo model, ChatML chat template),
// and the client must parse every response. Usage: node openai_e2e.mjs ARBOR CHAT_TEMPLATE
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import OpenAI from 'openai';

const [arbor, chatTemplate] = process.argv.slice(2);
if (!arbor || !chatTemplate) throw new Error('usage: openai_e2e.mjs ARBOR CHAT_TEMPLATE');

const port = await new Promise((resolve) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => resolve(p));
  });
});
const server = spawn(arbor, ['serve', '--device', 'cpu', '--port', String(port), '--api-key',
                             'e2e-key', '--served-model-name', 'demo', '--chat-template',
                             chatTemplate],
                     { stdio: ['ignore', 'ignore', 'inherit'] });
const exited = new Promise((resolve) => server.on('exit', (code) => resolve(code)));

const base = `http://127.0.0.1:${port}`;
for (let i = 0;; ++i) {
  try {
    if ((await fetch(`${base}/health`)).ok) break;
  } catch {}
  if (i > 300) throw new Error('arbor serve did not become healthy within 30 s');
  await new Promise((r) => setTimeout(r, 100));
}

const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'e2e-key', maxRetries: 0 });
const greedy = { model: 'demo', temperature: 0, max_tokens: 16 };
let passed = 0, failed = 0;
async function check(name, fn) {
  try {
    await fn();
    ++passed;
    console.log(`ok - ${name}`);
  } catch (e) {
    ++failed;
    console.log(`not ok - ${name}: ${e.stack || e}`);
  }
}

await check('models.list names the served model', async () => {
  const models = await client.models.list();
  assert.ok(models.data.some((m) => m.id === 'demo'));
});

let plain = '';
await check('completion', async () => {
  const r = await client.completions.create({ ...greedy, prompt: 'The jury said' });
  assert.equal(r.object, 'text_completion');
  plain = r.choices[0].text;
  assert.ok(plain.length > 0);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 16);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 16);
});

await check('streamed completion equals the plain one, usage last', async () => {
  const stream = await client.completions.create({
    ...greedy, prompt: 'The jury said', stream: true, stream_options: { include_usage: true } });
  let text = '', usage = null, finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, plain);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 16);
});

await check('n = 2 with a seed, logprobs', async () => {
  const r = await client.completions.create({
    model: 'demo', prompt: 'It was a cold morning, and', max_tokens: 8, n: 2, seed: 7,
    temperature: 1, logprobs: 2 });
  assert.equal(r.choices.length, 2);
  for (const c of r.choices) {
    assert.equal(c.logprobs.tokens.length, 8);
    assert.equal(c.logprobs.top_logprobs.length, 8);
    for (const lp of c.logprobs.token_logprobs) assert.ok(lp <= 0);
  }
});

await check('stop string', async () => {
  const r = await client.completions.create({
    model: 'demo', prompt: 'The jury said', max_tokens: 64, temperature: 0, stop: ['.'] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(!r.choices[0].text.includes('.'));
});

let chatText = '';
await check('chat completion', async () => {
  const r = await client.chat.completions.create({
    ...greedy, messages: [{ role: 'user', content: 'What did the jury say?' }] });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  chatText = r.choices[0].message.content;
  assert.ok(chatText.length > 0);
});

await check('streamed chat equals the plain one', async () => {
  const stream = await client.chat.completions.create({
    ...greedy, stream: true, messages: [{ role: 'user', content: 'What did the jury say?' }] });
  let text = '', role = null;
  for await (const chunk of stream) {
    const d = chunk.choices[0]?.delta;
    if (d?.role) role = d.role;
    if (d?.content) text += d.content;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, chatText);
});

await check('a wrong API key is a 401 the client understands', async () => {
  const bad = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.completions.create({ ...greedy, prompt: 'x' }),
                       (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
});

await check('a bad parameter is a 400 naming it', async () => {
  await assert.rejects(
    client.completions.create({ ...greedy, prompt: 'x', temperature: -3 }),
    (e) => e instanceof OpenAI.BadRequestError && /temperature/.test(e.message));
});

server.kill('SIGTERM');
const code = await exited;
await check('SIGTERM stops the server with exit code 0', async () => assert.equal(code, 0));
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
