// The official openai npm client against the real llmpool binary serving
// the generated `tiny` model: a client no one here wrote.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer, writeConfig, TINY_MODEL } from './server.mjs';

let server;
let client;

before(async () => {
  assert.ok(TINY_MODEL, 'LLMPOOL_TINY_MODEL is not set');
  const config = writeConfig(`
server:
  io_threads: 2
models:
  - name: tiny
    aliases: [tiny-chat]
    type: local
    path: ${TINY_MODEL}
    context: 512
    threads: 1
    capabilities: [general, fast]
`);
  server = await startServer(config);
  client = new OpenAI({ baseURL: `${server.baseURL}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
});

after(async () => {
  if (server) {
    const code = await server.stop();
    assert.equal(code, 0, `server exit code; stderr:\n${server.stderr()}`);
  }
});

test('lists the configured model with its aliases and capabilities', async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  assert.deepEqual(ids, ['tiny']);
  assert.deepEqual(page.data[0].aliases, ['tiny-chat']);
  assert.deepEqual(page.data[0].capabilities, ['general', 'fast']);
  assert.equal(page.data[0].object, 'model');
});

test('answers a chat completion with usage counts', async () => {
  const res = await client.chat.completions.create({
    model: 'tiny',
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Say hello.' },
    ],
    max_tokens: 8,
    temperature: 0,
  });
  assert.equal(res.object, 'chat.completion');
  assert.equal(res.model, 'tiny');
  assert.match(res.id, /^chatcmpl-[0-9a-f]{24}$/);
  assert.equal(res.choices.length, 1);
  const choice = res.choices[0];
  assert.equal(choice.message.role, 'assistant');
  assert.equal(typeof choice.message.content, 'string');
  assert.ok(['stop', 'length'].includes(choice.finish_reason));
  assert.ok(res.usage.prompt_tokens > 5, `prompt_tokens ${res.usage.prompt_tokens}`);
  assert.ok(res.usage.completion_tokens >= 1 && res.usage.completion_tokens <= 8);
  if (choice.finish_reason === 'length') assert.equal(res.usage.completion_tokens, 8);
  assert.equal(res.usage.total_tokens, res.usage.prompt_tokens + res.usage.completion_tokens);
});

test('greedy decoding and a fixed seed are deterministic; an alias reaches the model', async () => {
  const ask = (extra) => client.chat.completions.create({
    model: 'tiny-chat',
    messages: [{ role: 'user', content: 'Count to five.' }],
    max_tokens: 12,
    ...extra,
  });
  const [a, b] = [await ask({ temperature: 0 }), await ask({ temperature: 0 })];
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.equal(a.model, 'tiny');
  const [c, d] = [await ask({ temperature: 1, seed: 7 }), await ask({ temperature: 1, seed: 7 })];
  assert.equal(c.choices[0].message.content, d.choices[0].message.content);
});

test('an unknown model is a 404 model_not_found error', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }),
    (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err}`);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'model_not_found');
      assert.equal(err.param, 'model');
      assert.equal(err.type, 'invalid_request_error');
      return true;
    },
  );
});

test('a missing field and an out-of-range value are 400 errors naming the field', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'tiny' }), (err) => {
    assert.ok(err instanceof OpenAI.BadRequestError, `got ${err}`);
    assert.equal(err.param, 'messages');
    return true;
  });
  await assert.rejects(
    client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], temperature: 9 }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err}`);
      assert.equal(err.param, 'temperature');
      return true;
    },
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: -3 }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === 'max_tokens',
  );
});

test('malformed JSON is a 400 OpenAI error and the server keeps serving', async () => {
  const res = await fetch(`${server.baseURL}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"model": "tiny", "messages": [',
  });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.error.type, 'invalid_request_error');
  assert.equal(body.error.code, 'invalid_json');
  assert.ok(body.error.message.length > 0);

  const health = await fetch(`${server.baseURL}/health`);
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { status: 'ok' });
});

test('an unknown path is a 404 and a wrong method a 405, both as OpenAI errors', async () => {
  const nf = await fetch(`${server.baseURL}/v1/nothing-here`);
  assert.equal(nf.status, 404);
  assert.equal((await nf.json()).error.code, 'unknown_url');
  const wm = await fetch(`${server.baseURL}/v1/chat/completions`);
  assert.equal(wm.status, 405);
  assert.equal((await wm.json()).error.code, 'method_not_allowed');
});

test('a prompt longer than the context is a 400 context_length_exceeded', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: 'tiny',
      messages: [{ role: 'user', content: 'word '.repeat(2000) }],
      max_tokens: 4,
    }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err}`);
      assert.equal(err.code, 'context_length_exceeded');
      return true;
    },
  );
});
