// The model pool and hot reload, end to end: the real binary serving copies
// of the tiny model, driven by the official openai client, while the test
// rewrites its config file underneath it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import OpenAI from 'openai';
import { copyTinyModels, finishServer, startServer, writeConfig, TINY_MODEL } from './server.mjs';

let server;
let client;
let configPath;
let dir;

// Models a and b are copies of the tiny model; `gone` is removed later.
function config({ aContext = 2048, models = ['a', 'b', 'gone'], extra = '', pool = '', poll = 100 } = {}) {
  const entry = {
    a: `  - name: a
    path: a.gguf
    context: ${aContext}
    parallel: 4
    capabilities: [general]`,
    b: `  - name: b
    path: b.gguf
    context: 512
    parallel: 2
    capabilities: [fast]`,
    gone: `  - name: gone
    path: a.gguf
    context: 512`,
    added: `  - name: added
    aliases: [new-one]
    path: b.gguf
    context: 512
    capabilities: [code]`,
  };
  return `server:
  config_poll_ms: ${poll}
pool:
  load_timeout_ms: 30000
${pool}defaults:
  threads: 1
  keep_alive: 10m
models:
${models.map((m) => entry[m]).join('\n')}
${extra}`;
}

// Replaces the config file the way an operator should: write, then rename.
function rewrite(text) {
  const tmp = join(dir, 'next.yaml');
  writeFileSync(tmp, text);
  renameSync(tmp, configPath);
}

// POSTs to an operator endpoint; reads the whole answer (an unread body
// would hold its pooled connection).
async function post(path) {
  const res = await fetch(`${server.baseURL}${path}`, { method: 'POST' });
  return { status: res.status, json: await res.json() };
}

async function modelIds() {
  return (await client.models.list()).data.map((m) => m.id);
}

async function capacity() {
  const res = await fetch(`${server.baseURL}/api/capacity-status`);
  assert.equal(res.status, 200);
  return res.json();
}

async function reloads(result) {
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  const m = text.match(new RegExp(`^llmpool_config_reloads_total\\{result="${result}"\\} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : 0;
}

// Polls `check` until it returns true (10 s at most).
async function until(what, check) {
  const deadline = Date.now() + 10000;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Starts a long stream on `model` and resolves, once its first token is
// in, to { done }: a promise of how the stream ended.
async function startStream(model, maxTokens) {
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: 'user', content: 'Write for a long time.' }],
    max_tokens: maxTokens,
    stream: true,
    stream_options: { include_usage: true },
    ignore_eos: true,
  });
  const it = stream[Symbol.asyncIterator]();
  let first;
  do first = await it.next(); while (!first.done && !first.value.choices?.[0]?.delta?.content);
  const rest = (async () => {
    let finish = null;
    let usage = null;
    let servedBy = first.value?.model;
    for (let r = await it.next(); !r.done; r = await it.next()) {
      if (r.value.usage) usage = r.value.usage;
      for (const c of r.value.choices) if (c.finish_reason) finish = c.finish_reason;
      servedBy = r.value.model ?? servedBy;
    }
    return { finish, usage, servedBy, endedAt: Date.now() };
  })();
  return { done: rest };
}

before(async () => {
  assert.ok(TINY_MODEL, 'LLMPOOL_TINY_MODEL is not set');
  configPath = writeConfig(config());
  dir = dirname(configPath);
  copyTinyModels(dir, ['a.gguf', 'b.gguf']);
  server = await startServer(configPath);
  client = new OpenAI({ baseURL: `${server.baseURL}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
});

after(() => finishServer(server));

test('models load on first use and /api/capacity-status reports them', async () => {
  let cap = await capacity();
  assert.deepEqual(cap.models.map((m) => [m.name, m.state]), [['a', 'unloaded'], ['b', 'unloaded'], ['gone', 'unloaded']]);
  assert.equal(cap.models[0].memory_bytes, 0);
  const res = await client.chat.completions.create({ model: 'a', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 });
  assert.equal(res.model, 'a');
  cap = await capacity();
  const a = cap.models[0];
  assert.equal(a.state, 'ready');
  assert.ok(a.memory_bytes > 1000000, `memory ${a.memory_bytes}`);
  assert.equal(a.active, 0);
  assert.equal(a.queued, 0);
  assert.equal(a.parallel, 4);
  assert.equal(a.max_queue, 64);
  assert.equal(a.keep_alive, '10m');
  assert.equal(a.pinned, false);
  assert.ok(Math.abs(a.last_used - Date.now() / 1000) < 60, `last_used ${a.last_used}`);
  assert.equal(a.error, null);
  assert.equal(cap.models[1].state, 'unloaded');
  assert.equal(cap.pool.memory_used_bytes, a.memory_bytes);
  const listed = (await client.models.list()).data;
  assert.deepEqual(listed.map((m) => m.state), ['ready', 'unloaded', 'unloaded']);
});

test('a config rewrite adds, changes and removes models while streams run on the old one, and none breaks', async () => {
  const streams = await Promise.all([startStream('a', 1500), startStream('a', 1500), startStream('b', 400)]);
  const cap = await capacity();
  assert.ok(cap.models[0].active >= 2, `active on a: ${cap.models[0].active}`);

  const okBefore = await reloads('ok');
  rewrite(config({ aContext: 1024, models: ['a', 'b', 'added'] }));  // a changed, b same, gone removed, added new
  await until('the reload', async () => (await reloads('ok')) > okBefore);
  const reloadedAt = Date.now();
  assert.deepEqual(await modelIds(), ['a', 'b', 'added']);

  // The old `a` is still streaming: its version stays until its requests end.
  const during = await capacity();
  assert.equal(during.models[0].state, 'unloaded');  // the new `a`, not loaded yet
  assert.ok(during.pool.old_versions_finishing >= 1, JSON.stringify(during.pool));

  // The new models answer; the removed one is gone.
  const added = await client.chat.completions.create({ model: 'new-one', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3 });
  assert.equal(added.model, 'added');
  const fresh = await client.chat.completions.create({ model: 'a', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3 });
  assert.equal(fresh.model, 'a');
  assert.equal((await client.models.list()).data[0].context_length, 1024);
  await assert.rejects(
    client.chat.completions.create({ model: 'gone', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3 }),
    (err) => err.status === 404 && err.code === 'model_not_found',
  );

  const ended = await Promise.all(streams.map((s) => s.done));
  for (const [i, s] of ended.entries()) {
    assert.equal(s.finish, 'length', `stream ${i} ended with ${s.finish}`);
    assert.equal(s.usage.completion_tokens, i < 2 ? 1500 : 400, `stream ${i} tokens`);
  }
  assert.ok(ended[0].endedAt > reloadedAt && ended[1].endedAt > reloadedAt,
    'the streams on `a` were still running when the new config was applied');
  await until('the old version of a to go', async () => (await capacity()).pool.old_versions_finishing === 0);
});

test('an invalid config is refused, counted, and the old one keeps serving', async () => {
  const before = await modelIds();
  const failedBefore = await reloads('failed');
  rewrite(config({ models: ['a', 'b'], extra: '    colour: blue\n' }));  // an unknown field
  await until('the refused reload', async () => (await reloads('failed')) > failedBefore);
  assert.deepEqual(await modelIds(), before);
  const res = await client.chat.completions.create({ model: 'added', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3 });
  assert.equal(res.model, 'added');
  assert.match(server.stderr(), /config reload: .*config\.yaml:\d+:\d+: models\[1\]\.colour: unknown field/);

  rewrite('models: [\n');  // not even YAML
  await until('the second refused reload', async () => (await reloads('failed')) > failedBefore + 1);
  assert.deepEqual(await modelIds(), before);
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  assert.match(text, /^llmpool_config_last_reload_ok 0$/m);

  // A good file is taken again.
  const okBefore = await reloads('ok');
  rewrite(config({ models: ['a', 'b', 'added'], aContext: 1024 }));
  await until('the good reload', async () => (await reloads('ok')) > okBefore);
  assert.deepEqual(await modelIds(), ['a', 'b', 'added']);
});

test('unloading a busy model is a 409; once idle it unloads, and loads again on demand', async () => {
  const running = await startStream('b', 800);
  const busy = await post('/api/models/b/unload');
  assert.equal(busy.status, 409);
  const err = busy.json.error;
  assert.equal(err.code, 'model_busy');
  assert.match(err.message, /in flight/);
  assert.equal((await running.done).finish, 'length');
  const ok = await post('/api/models/b/unload');
  assert.equal(ok.status, 200, JSON.stringify(ok.json));
  assert.equal((await capacity()).models[1].state, 'unloaded');
  const load = await post('/api/models/b/load');
  assert.equal(load.status, 200);
  assert.deepEqual(load.json, { model: 'b', state: 'ready' });
  assert.equal((await capacity()).models[1].state, 'ready');
  const missing = await post('/api/models/nope/load');
  assert.equal(missing.status, 404);
  assert.equal(missing.json.error.code, 'model_not_found');
});

test('under a budget that fits one model the idle one is evicted and the busy one never', async () => {
  const size = statSync(TINY_MODEL).size;
  const okBefore = await reloads('ok');
  rewrite(config({ models: ['a', 'b', 'added'], aContext: 1024, pool: `  memory_budget: ${Math.floor(size * 1.5)}\n` }));
  await until('the budget reload', async () => (await reloads('ok')) > okBefore);
  // Make room: only b stays loaded.
  for (const m of ['a', 'added']) await post(`/api/models/${m}/unload`);
  await client.chat.completions.create({ model: 'b', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });

  // a needs b's room; b is idle, so b goes.
  await client.chat.completions.create({ model: 'a', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
  let cap = await capacity();
  assert.deepEqual(cap.models.map((m) => m.state), ['ready', 'unloaded', 'unloaded']);

  // While a streams, b cannot take its place: 429 saying why.
  const running = await startStream('a', 800);
  await assert.rejects(
    client.chat.completions.create({ model: 'b', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 }),
    (err) => err.status === 429 && /memory_budget/.test(err.message) && /'a'.*busy/.test(err.message),
  );
  const done = await running.done;
  assert.equal(done.finish, 'length');
  assert.equal(done.usage.completion_tokens, 800);
  await client.chat.completions.create({ model: 'b', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
  cap = await capacity();
  assert.deepEqual(cap.models.map((m) => m.state), ['unloaded', 'ready', 'unloaded']);
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  assert.match(text, /^llmpool_model_evictions_total\{model="a",reason="memory_budget"\} 1$/m);
});

test('SIGHUP reloads at once when polling is off', async () => {
  const okBefore = await reloads('ok');
  rewrite(config({ models: ['a', 'b'], poll: 0 }));  // the last change polling picks up
  await until('the reload that turns polling off', async () => (await reloads('ok')) > okBefore);
  rewrite(config({ models: ['b'], poll: 0 }));
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(await modelIds(), ['a', 'b']);  // not picked up without SIGHUP
  server.child.kill('SIGHUP');
  await until('the SIGHUP reload', async () => (await reloads('ok')) > okBefore + 1);
  assert.deepEqual(await modelIds(), ['b']);
});
