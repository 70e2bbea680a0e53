// The router end to end: the real binary with two copies of the tiny model
// behind route groups, driven by the official openai client. Checks that
// `model: "auto"` picks a model and says which (header and `llmpool`
// field), that streams carry the field on their first chunk and arrive
// token by token, that n > 1 returns every choice, that every
// decision is a line in the decision log, and that /v1/feedback and
// /api/routing-metrics answer.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import OpenAI from 'openai';
import { copyTinyModels, finishServer, startServer, writeConfig, TINY_MODEL } from './server.mjs';

let server;
let client;
let dir;
let configPath;

const CODE = 'Fix this python function:\n```python\ndef add(a, b):\n    return a - b\n```';

before(async () => {
  assert.ok(TINY_MODEL, 'LLMPOOL_TINY_MODEL is not set');
  configPath = writeConfig(config());
  dir = dirname(configPath);
  copyTinyModels(dir, ['a.gguf', 'b.gguf']);
  server = await startServer(configPath);
  client = new OpenAI({ baseURL: `${server.baseURL}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
});

// Two copies of the tiny model behind three groups; `extra` adds groups.
function config(extra = '') {
  return `server:
  config_poll_ms: 100
pool:
  load_timeout_ms: 30000
defaults:
  threads: 1
  context: 1024
  parallel: 2
models:
  - name: general
    path: a.gguf
    capabilities: [general]
  - name: coder
    path: b.gguf
    capabilities: [code]
    thinking: {supported: true, min_tokens: 16, max_tokens: 64}
routing:
  admission: {max_active: 16}
  groups:
    - name: auto
      models: [general, coder]
      fallbacks: [general]
    - name: vote
      models: [general, coder]
      strategy: voting
      k: 2
    - name: trial
      models: [coder]
${extra}  canary:
    routes:
      - route: trial
        baseline_model: coder
        arms: [{name: next, model: general, percent: 100}]
  decision_log: decisions.jsonl
`;
}

after(() => finishServer(server));

function ask(model, content, extra = {}) {
  return client.chat.completions
    .create({ model, messages: [{ role: 'user', content }], max_tokens: 4, ignore_eos: true, temperature: 0, ...extra })
    .withResponse();
}

// The decision log's line for the response `id` (the log is written out
// within a second).
async function decisionFor(id) {
  const path = join(dir, 'decisions.jsonl');
  const deadline = Date.now() + 10000;
  for (;;) {
    const lines = existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
    const line = lines.find((l) => l.request_id === id);
    if (line) return line;
    if (Date.now() > deadline) throw new Error(`no decision line for ${id}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('model auto picks a model and says which and why', async () => {
  const { data, response } = await ask('auto', CODE);
  assert.equal(response.headers.get('x-llmpool-model'), 'coder');
  assert.ok(response.headers.get('x-llmpool-route-reason').includes('best score'));
  assert.equal(data.model, 'coder');
  assert.equal(data.llmpool.model, 'coder');
  assert.equal(data.llmpool.route, 'auto');
  assert.equal(data.llmpool.ensemble.strategy, 'fastest');
  assert.equal(data.choices[0].message.content.length > 0, true);

  const line = await decisionFor(data.id);
  assert.equal(line.route, 'auto');
  assert.equal(line.chosen, 'coder');
  assert.equal(line.answered_by, 'coder');
  assert.deepEqual(line.candidates.map((c) => c.model), ['coder', 'general']);
  assert.equal(line.candidates[1].excluded, true);
  assert.ok(line.router_us >= 0 && line.router_us < 100000, `router_us ${line.router_us}`);
  assert.equal(line.effort.thinking_budget >= 0, true);  // coder thinks: the budget is set
});

test('a routed stream carries the llmpool field on its first chunk', async () => {
  const { data: stream, response } = await client.chat.completions
    .create({ model: 'auto', messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 4, ignore_eos: true, stream: true })
    .withResponse();
  const served = response.headers.get('x-llmpool-model');
  assert.ok(['general', 'coder'].includes(served), `x-llmpool-model ${served}`);
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.equal(chunks[0].llmpool.model, served);
  assert.equal(chunks.slice(1).some((c) => c.llmpool), false);
  assert.ok(chunks.some((c) => c.choices[0]?.finish_reason));
});

// The concatenated content of a stream's chunks, per choice index.
function streamedContent(chunks) {
  const out = [];
  for (const c of chunks)
    for (const ch of c.choices) {
      out[ch.index] ??= [];
      if (ch.delta?.content) out[ch.index].push(ch.delta.content);
    }
  return out;
}

test('a routed stream arrives token by token and equals the whole answer', async () => {
  const params = { model: 'auto', messages: [{ role: 'user', content: CODE }], max_tokens: 8, ignore_eos: true, temperature: 0 };
  const { data: stream, response } = await client.chat.completions.create({ ...params, stream: true }).withResponse();
  const served = response.headers.get('x-llmpool-model');
  assert.ok(['general', 'coder'].includes(served), `x-llmpool-model ${served}`);
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.equal(chunks[0].llmpool.model, served);
  const [pieces] = streamedContent(chunks);
  assert.ok(pieces.length >= 2, `${pieces.length} content chunks`);
  // a and b are the same tiny model, so a greedy answer is the same whoever answers.
  const whole = await client.chat.completions.create(params);
  assert.equal(pieces.join(''), whole.choices[0].message.content);
});

test('a routed request with n 2 returns both choices, streamed or not', async () => {
  const params = { model: 'auto', messages: [{ role: 'user', content: CODE }], max_tokens: 4, ignore_eos: true, temperature: 0, n: 2 };
  const whole = await client.chat.completions.create(params);
  assert.deepEqual(whole.choices.map((c) => c.index), [0, 1]);
  const stream = await client.chat.completions.create({ ...params, stream: true });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const content = streamedContent(chunks);
  assert.equal(content.length, 2);
  assert.equal(content[0].join(''), whole.choices[0].message.content);
  assert.equal(content[1].join(''), whole.choices[1].message.content);
});

test('a voting group gathers two answers and reports them', async () => {
  const { data } = await ask('vote', 'What is two plus two?');
  assert.equal(data.llmpool.ensemble.strategy, 'voting');
  assert.deepEqual(data.llmpool.ensemble.candidates.map((c) => c.model).sort(), ['coder', 'general']);
});

test('a judge chosen per request picks among the answers and says how', async () => {
  const { data } = await ask('vote', 'Name a colour.', { ensemble: { strategy: 'judge', judge: 'general' } });
  const e = data.llmpool.ensemble;
  assert.equal(e.strategy, 'judge');
  assert.equal(e.candidates.length, 2);
  assert.ok(['general', 'coder'].includes(e.winner_model), `winner ${e.winner_model}`);
  assert.equal(typeof e.reason, 'string');
  assert.ok(e.reason.length > 0);
  const line = await decisionFor(data.id);
  assert.equal(line.judge, 'general');
  assert.ok(line.attempts.some((a) => a.kind === 'judge'));
});

test('a canary arm takes its users and feedback reaches it', async () => {
  const { data, response } = await ask('trial', 'Hi', { user: 'alice' });
  assert.equal(response.headers.get('x-llmpool-model'), 'general');
  assert.equal(data.llmpool.canary_arm, 'next');
  const fb = await fetch(`${server.baseURL}/v1/feedback`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ response_id: data.id, helpful: true }),
  });
  assert.equal(fb.status, 200);
  assert.deepEqual(await fb.json(), {
    object: 'feedback', response_id: data.id, helpful: true, model: 'general', route: 'trial', arm: 'next',
  });
  const unknown = await fetch(`${server.baseURL}/v1/feedback`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ response_id: 'chatcmpl-nope', helpful: true }),
  });
  assert.equal(unknown.status, 404);
  assert.equal((await unknown.json()).error.param, 'response_id');

  const m = await (await fetch(`${server.baseURL}/api/routing-metrics`)).json();
  const arms = m.routes.find((r) => r.route === 'trial').arms;
  assert.equal(arms[1].name, 'next');
  assert.equal(arms[1].helpful, 1);
  assert.equal(arms[1].enabled, true);
});

test('routing metrics describe every instance', async () => {
  await ask('general', 'Hi');  // a direct request counts too
  const m = await (await fetch(`${server.baseURL}/api/routing-metrics`)).json();
  assert.deepEqual(m.instances.map((i) => i.id), ['general', 'coder']);
  for (const i of m.instances) {
    assert.ok(i.latency_samples >= 1, `${i.id}: ${i.latency_samples} samples`);
    assert.ok(i.avg_latency_ms > 0);
    assert.equal(i.breaker_state, 'closed');
    assert.equal(typeof i.score, 'number');
  }
  assert.deepEqual(m.instances[1].capability_tags, ['code']);
  const prom = await (await fetch(`${server.baseURL}/metrics`)).text();
  assert.match(prom, /^llmpool_router_overhead_seconds_count [1-9]/m);
  assert.match(prom, /^llmpool_breaker_state\{instance="coder"\} 0$/m);
});

test('a new route group applies on reload', async () => {
  await assert.rejects(ask('later', 'Hi'), (e) => e.status === 404);
  const tmp = join(dir, 'next.yaml');
  writeFileSync(tmp, config(`    - name: later
      models: [general]
`));
  renameSync(tmp, configPath);
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      const { data, response } = await ask('later', 'Hi');
      assert.equal(response.headers.get('x-llmpool-model'), 'general');
      assert.equal(data.llmpool.route, 'later');
      break;
    } catch (e) {
      if (e.status !== 404 || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
});
