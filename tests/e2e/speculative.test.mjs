// The speculation gate's metrics through the real server: the trained demo
// pair (scripts/demo-models: `small` and its draft `tiny`, one vocabulary)
// served three ways, requests through the official client, and /metrics
// read after each. Counts and presence only, never speed: whether
// speculating wins here is the gate's business, not this test's.
//   gated   small with the draft, draft.adaptive: true (the default)
//   always  small with the draft, draft.adaptive: false (every step speculates)
//   plain   small without a draft
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer, writeConfig, finishServer } from './server.mjs';

const SMALL = process.env.LLMPOOL_DEMO_SMALL_MODEL;
const TINY = process.env.LLMPOOL_DEMO_TINY_MODEL;

let server;
let client;

before(async () => {
  assert.ok(SMALL && TINY, 'LLMPOOL_DEMO_SMALL_MODEL and LLMPOOL_DEMO_TINY_MODEL must be set');
  const model = (name, draft) => `
  - name: ${name}
    type: local
    path: ${SMALL}
    context: 512
    parallel: 2
    threads: 1
    warm: true
${draft ? `    draft: ${draft}\n` : ''}`;
  const config = writeConfig(`
server:
  io_threads: 1
models:${model('gated', `{model: ${TINY}}`)}${model('always', `{model: ${TINY}, adaptive: false}`)}${model('plain', '')}`);
  server = await startServer(config);
  client = new OpenAI({ baseURL: `${server.baseURL}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
});

after(async () => {
  await finishServer(server);
});

// The speculation figures of `model` on /metrics: steps per mode (undefined
// when the series is missing) and the speedup estimate's text ('NaN', a
// number, or undefined when absent).
async function speculation(model) {
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  const steps = (mode) => {
    const m = text.match(new RegExp(`^llmpool_speculative_steps_total\\{model="${model}",mode="${mode}"\\} (\\S+)$`, 'm'));
    return m ? Number(m[1]) : undefined;
  };
  const est = text.match(new RegExp(`^llmpool_speculative_speedup_estimate\\{model="${model}"\\} (\\S+)$`, 'm'));
  return { on: steps('on'), off: steps('off'), estimate: est ? est[1] : undefined };
}

// A greedy streamed answer of exactly `tokens` tokens (each its own decode
// step at least when nothing speculates); `extra` goes into the body.
async function generate(model, tokens, extra = {}) {
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: 'user', content: 'Tell me a fortune about the sea.' }],
    max_tokens: tokens,
    temperature: 0,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
    ...extra,
  });
  let usage = null;
  for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
  assert.equal(usage?.completion_tokens, tokens);
}

const unmeasured = (estimate) => estimate === undefined || estimate === 'NaN';

test('before any request no step is counted and there is no estimate', async () => {
  for (const model of ['gated', 'always', 'plain']) {
    const s = await speculation(model);
    assert.equal(s.on, 0, `${model} on`);
    assert.equal(s.off, 0, `${model} off`);
    assert.ok(unmeasured(s.estimate), `${model} estimate ${s.estimate}`);
  }
});

test('a request that turns speculation off is none of the gate\'s steps', async () => {
  await generate('gated', 16, { speculative: false });
  const s = await speculation('gated');
  assert.equal(s.on, 0);
  assert.equal(s.off, 0);
  assert.ok(unmeasured(s.estimate), `estimate ${s.estimate}`);
});

test('the gate counts both modes and, once both were measured, estimates a finite speedup', async () => {
  // The first runs of 4 steps alternate the two modes (speculative.h): a few
  // answers of 32 tokens give each mode more than one run. Bounded, not timed.
  let s;
  for (let i = 0; i < 6; i++) {
    await generate('gated', 32);
    s = await speculation('gated');
    if (s.on >= 8 && s.off >= 8) break;
  }
  assert.ok(s.on >= 8, `steps on: ${s.on}`);
  assert.ok(s.off >= 8, `steps off: ${s.off}`);
  assert.match(s.estimate, /^[0-9.e+-]+$/, `estimate ${s.estimate}`);
  const estimate = Number(s.estimate);
  assert.ok(Number.isFinite(estimate) && estimate > 0, `estimate ${s.estimate}`);
  // Counters only grow, and every step of a request counts under one mode.
  await generate('gated', 8);
  const after = await speculation('gated');
  assert.ok(after.on >= s.on && after.off >= s.off, `${JSON.stringify(s)} -> ${JSON.stringify(after)}`);
  assert.ok(after.on + after.off > s.on + s.off, `${JSON.stringify(s)} -> ${JSON.stringify(after)}`);
  assert.ok(after.on + after.off <= s.on + s.off + 8, 'at most one step per token');
  assert.ok(Number.isFinite(Number(after.estimate)), `estimate ${after.estimate}`);
});

test('without the gate every step speculates and there is nothing to compare', async () => {
  await generate('always', 24);
  const s = await speculation('always');
  assert.ok(s.on > 0, `steps on: ${s.on}`);
  assert.ok(s.on <= 24, `steps on: ${s.on}`);
  assert.equal(s.off, 0);
  assert.ok(unmeasured(s.estimate), `estimate ${s.estimate}`);
});

test('a model without a draft counts no steps', async () => {
  await generate('plain', 16);
  const s = await speculation('plain');
  assert.equal(s.on, 0);
  assert.equal(s.off, 0);
  assert.ok(unmeasured(s.estimate), `estimate ${s.estimate}`);
  // The other models' counts are their own.
  assert.equal((await speculation('always')).off, 0);
});
