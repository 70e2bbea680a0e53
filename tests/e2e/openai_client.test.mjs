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
    parallel: 4
    threads: 1
    capabilities: [general, fast]
  - name: tiny-embed
    type: local
    path: ${TINY_MODEL}
    context: 256
    parallel: 2
    threads: 1
    capabilities: [embedding]
  - name: tiny-tools
    type: local
    path: ${process.env.LLMPOOL_TINY_QWEN3_MODEL}
    context: 1024
    parallel: 2
    threads: 1
    capabilities: [general]
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
  assert.deepEqual(ids, ['tiny', 'tiny-embed', 'tiny-tools']);
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

// Reads a Prometheus gauge for the tiny model from /metrics.
async function gauge(name) {
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  const m = text.match(new RegExp(`^${name}\\{model="tiny"\\} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : undefined;
}

test('streams a chat completion chunk by chunk with usage at the end', async () => {
  const stream = await client.chat.completions.create({
    model: 'tiny',
    messages: [{ role: 'user', content: 'Stream please.' }],
    max_tokens: 10,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
    ignore_eos: true,
  });
  let text = '';
  let chunks = 0;
  let finish = null;
  let usage = null;
  let role = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      chunks++;
      role ??= c.delta.role;
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(role, 'assistant');
  assert.ok(chunks >= 2, `chunks ${chunks}`);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 10);
  // The same request without streaming gives the same text.
  const whole = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'Stream please.' }], max_tokens: 10, temperature: 0, ignore_eos: true,
  });
  assert.equal(whole.choices[0].message.content, text);
});

test('n > 1 returns n choices from one prompt', async () => {
  const res = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'Three ways.' }], max_tokens: 6, n: 3, seed: 5, ignore_eos: true,
  });
  assert.equal(res.choices.length, 3);
  assert.deepEqual(res.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(res.usage.completion_tokens, 18);
});

test('a stop string ends the answer before it', async () => {
  const base = { model: 'tiny', messages: [{ role: 'user', content: 'Story.' }], max_tokens: 20, temperature: 0, ignore_eos: true };
  const full = (await client.chat.completions.create(base)).choices[0].message.content;
  const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 2);
  const cut = await client.chat.completions.create({ ...base, stop: [stop] });
  assert.equal(cut.choices[0].finish_reason, 'stop');
  assert.equal(cut.choices[0].message.content, full.slice(0, full.indexOf(stop)));
});

test('logprobs come with top alternatives', async () => {
  const res = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3, temperature: 0,
    logprobs: true, top_logprobs: 2, ignore_eos: true,
  });
  const content = res.choices[0].logprobs.content;
  assert.equal(content.length, 3);
  for (const t of content) {
    assert.ok(t.logprob <= 0);
    assert.equal(t.top_logprobs.length, 2);
    assert.ok(Array.isArray(t.bytes));
  }
});

test('json_schema response_format gives JSON that matches the schema', async () => {
  const res = await client.chat.completions.create({
    model: 'tiny',
    messages: [{ role: 'user', content: 'Give me JSON.' }],
    max_tokens: 64,
    response_format: {
      type: 'json_schema',
      json_schema: {
        name: 'answer',
        schema: {
          type: 'object',
          properties: { ok: { type: 'boolean' }, color: { enum: ['red', 'green'] } },
          required: ['ok', 'color'],
          additionalProperties: false,
        },
      },
    },
  });
  const parsed = JSON.parse(res.choices[0].message.content);
  assert.equal(typeof parsed.ok, 'boolean');
  assert.ok(['red', 'green'].includes(parsed.color));
});

test('legacy completions work, streaming and not', async () => {
  const res = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 5, temperature: 0, ignore_eos: true, logprobs: 1 });
  assert.equal(res.object, 'text_completion');
  assert.equal(res.usage.completion_tokens, 5);
  assert.equal(res.choices[0].logprobs.tokens.length, 5);
  const stream = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 5, temperature: 0, ignore_eos: true, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, res.choices[0].text);
});

test('embeddings: float and base64 encodings agree, vectors are unit length', async () => {
  const input = ['The quick brown fox', 'jumps over the lazy dog'];
  const b64 = await client.embeddings.create({ model: 'tiny-embed', input });  // the client asks for base64
  const flt = await client.embeddings.create({ model: 'tiny-embed', input, encoding_format: 'float' });
  assert.equal(b64.data.length, 2);
  assert.equal(b64.object, 'list');
  assert.ok(b64.usage.prompt_tokens > 4);
  for (let i = 0; i < 2; i++) {
    assert.equal(b64.data[i].index, i);
    assert.equal(b64.data[i].embedding.length, 64);
    const norm = Math.hypot(...flt.data[i].embedding);
    assert.ok(Math.abs(norm - 1) < 1e-3, `norm ${norm}`);
    for (let k = 0; k < 64; k++) assert.ok(Math.abs(b64.data[i].embedding[k] - flt.data[i].embedding[k]) < 1e-6);
  }
  await assert.rejects(client.embeddings.create({ model: 'tiny', input: 'x' }), (err) => err.status === 400 && err.param === 'model');
  await assert.rejects(client.chat.completions.create({ model: 'tiny-embed', messages: [{ role: 'user', content: 'x' }] }),
    (err) => err.status === 400);
});

test('tokenize and detokenize round-trip', async () => {
  const tok = await (await fetch(`${server.baseURL}/tokenize`, { method: 'POST', body: JSON.stringify({ model: 'tiny', content: 'Hello world' }) })).json();
  assert.ok(tok.tokens.length >= 2);
  const det = await (await fetch(`${server.baseURL}/detokenize`, { method: 'POST', body: JSON.stringify({ model: 'tiny', tokens: tok.tokens }) })).json();
  assert.match(det.content, /Hello world/);
});

test('a client that disconnects mid-stream frees its sequence', async () => {
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    { model: 'tiny', messages: [{ role: 'user', content: 'Never stop.' }], max_tokens: 100000, stream: true, ignore_eos: true },
    { signal: controller.signal },
  );
  let got = 0;
  try {
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) got++;
      if (got === 3) {
        controller.abort();  // the client closes the connection
        break;
      }
    }
  } catch (err) {
    assert.ok(err instanceof OpenAI.APIUserAbortError || err.name === 'AbortError', `got ${err}`);
  }
  assert.equal(got, 3);
  // The engine notices and frees the sequence (bounded wait, not a timing assertion).
  let active = await gauge('llmpool_active_sequences');
  for (let i = 0; i < 100 && active > 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    active = await gauge('llmpool_active_sequences');
  }
  assert.equal(active, 0);
  // It was cancelled, not run to its end: counted as 499 (client closed request).
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  assert.match(text, /^llmpool_requests_total\{model="tiny",endpoint="chat.completions",status="499"\} 1$/m);
  // And the server still answers.
  const res = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
  assert.equal(res.choices.length, 1);
});

test('metrics expose requests, tokens, latency histograms and the prefix cache', async () => {
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  assert.match(text, /^llmpool_requests_total\{model="tiny",endpoint="chat.completions",status="200"\} \d+/m);
  assert.match(text, /^llmpool_requests_total\{model="tiny",endpoint="chat.completions",status="404"\}|llmpool_completion_tokens_total\{model="tiny"\} \d+/m);
  assert.match(text, /^llmpool_time_to_first_token_seconds_bucket\{model="tiny",le="\+Inf"\} \d+/m);
  assert.match(text, /^llmpool_inter_token_latency_seconds_count\{model="tiny"\} \d+/m);
  assert.match(text, /^llmpool_prefix_cache_hit_tokens_total\{model="tiny"\} \d+/m);
  assert.match(text, /^llmpool_kv_cache_total_cells\{model="tiny"\} 2048/m);
  assert.ok((await gauge('llmpool_prefix_cache_hit_ratio')) > 0, 'repeated prompts hit the prefix cache');
});

test('tools go through the model\'s template; tool results come back as a conversation', async () => {
  const tools = [{
    type: 'function',
    function: { name: 'get_weather', description: 'Get the weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
  }];
  const messages = [{ role: 'user', content: 'Weather in Paris?' }];
  const plain = await client.chat.completions.create({ model: 'tiny-tools', messages, max_tokens: 4, ignore_eos: true });
  const withTools = await client.chat.completions.create({ model: 'tiny-tools', messages, tools, max_tokens: 4, ignore_eos: true });
  assert.ok(withTools.usage.prompt_tokens > plain.usage.prompt_tokens + 50, 'the tool signatures are in the prompt');
  assert.equal(withTools.choices[0].message.role, 'assistant');
  // A whole tool round trip is accepted: assistant tool_calls, then the tool's answer.
  const followUp = await client.chat.completions.create({
    model: 'tiny-tools',
    tools,
    max_tokens: 4,
    ignore_eos: true,
    messages: [
      ...messages,
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: 'sunny, 21 C' },
    ],
  });
  assert.ok(followUp.usage.prompt_tokens > withTools.usage.prompt_tokens);
  await assert.rejects(
    client.chat.completions.create({ model: 'tiny-tools', messages, tool_choice: 'required', max_tokens: 4 }),
    (err) => err.status === 400 && err.param === 'tool_choice',
  );
});

// Forced tool calls: on the demo's kind of model (ChatML, no tool support:
// the generic format) and on one with its own format (Qwen3), a random-weights
// model must still answer tool_choice naming a function, or "required", with
// a complete call whose arguments are JSON matching the tool's schema.
const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the weather forecast',
    // Bounded, so that a model with random weights finishes its arguments.
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 16 }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
      required: ['unit'],
    },
  },
};
const timeTool = {
  type: 'function',
  function: { name: 'get_time', description: 'Get the time', parameters: { type: 'object', properties: { zone: { enum: ['UTC', 'CET'] } }, required: ['zone'] } },
};
const toolMessages = [{ role: 'user', content: 'What is the weather in Paris?' }];

function assertValidCall(call, names) {
  assert.equal(call.type, 'function');
  assert.match(call.id, /^call_/);
  assert.ok(names.includes(call.function.name), `called ${call.function.name}`);
  const args = JSON.parse(call.function.arguments);
  if (call.function.name === 'get_weather') {
    assert.ok(['celsius', 'fahrenheit'].includes(args.unit), call.function.arguments);
    for (const key of Object.keys(args)) assert.ok(['city', 'unit'].includes(key), call.function.arguments);
    if ('city' in args) assert.equal(typeof args.city, 'string');
  } else {
    assert.deepEqual(Object.keys(args), ['zone']);
    assert.ok(['UTC', 'CET'].includes(args.zone));
  }
}

for (const model of ['tiny', 'tiny-tools']) {
  // Qwen3's format lets calls follow one another without end, and a random
  // model rarely stops choosing another: one call at a time there. The
  // generic format's list closes soon enough to keep OpenAI's default.
  const parallel = model === 'tiny-tools' ? { parallel_tool_calls: false } : {};

  test(`${model}: tool_choice naming a function returns a call of that function`, async () => {
    for (const seed of [1, 2]) {
      const res = await client.chat.completions.create({
        model, messages: toolMessages, tools: [weatherTool, timeTool], seed, max_tokens: 300, ...parallel,
        tool_choice: { type: 'function', function: { name: 'get_weather' } },
      });
      const choice = res.choices[0];
      assert.equal(choice.finish_reason, 'tool_calls');
      assert.equal(choice.message.role, 'assistant');
      assert.equal(choice.message.content, null);
      assert.ok(choice.message.tool_calls.length >= 1);
      for (const call of choice.message.tool_calls) assertValidCall(call, ['get_weather']);
    }
  });

  test(`${model}: tool_choice "required" streamed assembles with the client's stream helper`, async () => {
    const stream = client.chat.completions.stream({
      model, messages: toolMessages, tools: [weatherTool, timeTool], tool_choice: 'required', seed: 3, max_tokens: 300,
      ...parallel,
    });
    const done = [];
    stream.on('tool_calls.function.arguments.done', (e) => done.push(e));
    const chunks = [];
    stream.on('chunk', (c) => chunks.push(c));
    const final = await stream.finalChatCompletion();
    const choice = final.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.content, null);
    assert.ok(choice.message.tool_calls.length >= 1);
    for (const call of choice.message.tool_calls) assertValidCall(call, ['get_weather', 'get_time']);
    assert.deepEqual(done.map((e) => e.name), choice.message.tool_calls.map((c) => c.function.name));
    // As OpenAI streams them: a call's first delta has index, id, type and
    // name; its arguments follow in pieces.
    const deltas = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
    const first = deltas.find((d) => d.index === 0);
    assert.equal(first.type, 'function');
    assert.match(first.id, /^call_/);
    assert.equal(first.function.name, choice.message.tool_calls[0].function.name);
    assert.ok(deltas.filter((d) => d.index === 0 && d.function?.arguments).length > 1, 'arguments come in pieces');
    assert.ok(deltas.filter((d) => d.index === 0 && d.id).length === 1, 'the id comes once');
  });

  test(`${model}: a named function streamed, and parallel_tool_calls false gives one call`, async () => {
    const stream = await client.chat.completions.create({
      model, messages: toolMessages, tools: [weatherTool, timeTool], stream: true, seed: 4, max_tokens: 300,
      tool_choice: { type: 'function', function: { name: 'get_weather' } }, parallel_tool_calls: false,
    });
    const calls = [];
    let finish = null;
    let content = '';
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (!choice) continue;
      content += choice.delta?.content ?? '';
      for (const d of choice.delta?.tool_calls ?? []) {
        calls[d.index] ??= { id: d.id, type: d.type, function: { name: d.function?.name, arguments: '' } };
        calls[d.index].function.arguments += d.function?.arguments ?? '';
      }
      finish = choice.finish_reason ?? finish;
    }
    assert.equal(finish, 'tool_calls');
    assert.equal(content, '');
    assert.equal(calls.length, 1);
    assertValidCall(calls[0], ['get_weather']);

    const res = await client.chat.completions.create({
      model, messages: toolMessages, tools: [weatherTool, timeTool], seed: 5, max_tokens: 300,
      tool_choice: 'required', parallel_tool_calls: false,
    });
    assert.equal(res.choices[0].message.tool_calls.length, 1);
    assertValidCall(res.choices[0].message.tool_calls[0], ['get_weather', 'get_time']);
  });

  test(`${model}: tool_choice "none" with tools answers in text`, async () => {
    const res = await client.chat.completions.create({
      model, messages: toolMessages, tools: [weatherTool], tool_choice: 'none', max_tokens: 6, ignore_eos: true,
    });
    const choice = res.choices[0];
    assert.equal(choice.finish_reason, 'length');
    assert.equal(typeof choice.message.content, 'string');
    assert.ok(choice.message.content.length > 0);
    assert.equal(choice.message.tool_calls, undefined);
  });
}
