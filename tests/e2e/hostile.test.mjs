// Hostile request bodies against the real binary serving the tiny model:
// deep nesting, wrong JSON types at depth, schemas built to blow up the
// grammar converter. Each must get a 400 naming the field, and the server
// must go on answering /health and ordinary completions after each one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer, writeConfig, finishServer, TINY_MODEL } from './server.mjs';

let server;
let client;

before(async () => {
  assert.ok(TINY_MODEL, 'LLMPOOL_TINY_MODEL is not set');
  const config = writeConfig(`
server:
  io_threads: 2
models:
  - name: tiny
    type: local
    path: ${TINY_MODEL}
    context: 512
    parallel: 2
    threads: 1
`);
  server = await startServer(config);
  client = new OpenAI({ baseURL: `${server.baseURL}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
});

after(async () => {
  await finishServer(server);
});

const nested = (depth, open = '[', close = ']', leaf = '1') => open.repeat(depth) + leaf + close.repeat(depth);
const nestedSchema = (depth) =>
  '{"type":"object","properties":{"a":'.repeat(depth) + '{"type":"string"}' + '}}'.repeat(depth);
const MESSAGES = '"messages":[{"role":"user","content":"hi"}]';

async function post(path, body) {
  const res = await fetch(`${server.baseURL}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  return { status: res.status, body: await res.json() };
}

// The body must be refused with 400 naming `param`; then the server must
// still be healthy and answer an ordinary completion.
async function refusedThenServing(path, body, param) {
  const res = await post(path, body);
  assert.equal(res.status, 400, JSON.stringify(res.body).slice(0, 300));
  assert.equal(res.body.error.type, 'invalid_request_error');
  assert.equal(res.body.error.param, param, res.body.error.message);
  assert.ok(res.body.error.message.length < 400, res.body.error.message);
  const health = await fetch(`${server.baseURL}/health`);
  assert.equal(health.status, 200);
  const ok = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 4, temperature: 0,
  });
  assert.equal(ok.choices.length, 1);
  assert.ok(ok.usage.completion_tokens >= 1);
  return res.body.error;
}

test('max_tokens nested 100,000 arrays deep is a 400 naming max_tokens', async () => {
  const body = `{"model":"tiny",${MESSAGES},"max_tokens":${nested(100000)}}`;
  assert.ok(body.length > 200000);
  const err = await refusedThenServing('/v1/chat/completions', body, 'max_tokens');
  assert.match(err.message, /nested deeper than 64/);
});

test('tool parameters nested 100,000 objects deep are a 400 naming the tool', async () => {
  const params = nested(100000, '{"a":', '}');
  const body = `{"model":"tiny",${MESSAGES},"tools":[{"type":"function","function":{"name":"f","parameters":${params}}}]}`;
  await refusedThenServing('/v1/chat/completions', body, 'tools[0].function.parameters');
});

test('a response_format schema 20,000 levels deep is a 400 naming the schema', async () => {
  const body = `{"model":"tiny",${MESSAGES},"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":${nestedSchema(20000)}}}}`;
  await refusedThenServing('/v1/chat/completions', body, 'response_format.json_schema.schema');
});

test('a schema past the schema limits (depth, repetition) is a 400 naming the schema', async () => {
  const deep = `{"model":"tiny",${MESSAGES},"response_format":{"type":"json_schema","json_schema":{"schema":${nestedSchema(20)}}}}`;
  const err = await refusedThenServing('/v1/chat/completions', deep, 'response_format.json_schema.schema');
  assert.match(err.message, /deeper than 32/);
  const repeat = JSON.stringify({
    model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4,
    response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'array', minItems: 1000000000 } } },
  });
  const err2 = await refusedThenServing('/v1/chat/completions', repeat, 'response_format.json_schema.schema');
  assert.match(err2.message, /minItems/);
});

test('wrong JSON types at depth are 400s naming their path, not 500s', async () => {
  await refusedThenServing('/v1/chat/completions',
    `{"model":"tiny",${MESSAGES},"tools":[{"type":1,"function":{"name":"f"}}]}`, 'tools[0].type');
  const history = JSON.stringify({
    model: 'tiny',
    messages: [
      { role: 'user', content: 'weather?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 12345, type: 'function', function: { name: 'get_weather', arguments: '{}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: 'sunny' },
    ],
  });
  await refusedThenServing('/v1/chat/completions', history, 'messages[1].tool_calls[0].id');
  await refusedThenServing('/v1/chat/completions',
    `{"model":"tiny","messages":[{"role":"user","content":[{"type":"text","text":5}]}]}`, 'messages[0].content[0].text');
  await refusedThenServing('/v1/chat/completions', `{"model":"tiny",${MESSAGES},"logit_bias":{"123":"up"}}`, 'logit_bias.123');
  await refusedThenServing('/v1/chat/completions', `{"model":"tiny",${MESSAGES},"stop":["a",1]}`, 'stop[1]');
  await refusedThenServing('/v1/completions', `{"model":"tiny","prompt":"x","stream_options":{"include_usage":"yes"}}`,
    'stream_options.include_usage');
});

test('the other bodies (tokenize, detokenize, embeddings, feedback) are bounded too', async () => {
  await refusedThenServing('/tokenize', `{"model":"tiny","content":${nested(100000)}}`, 'content');
  await refusedThenServing('/detokenize', `{"model":"tiny","tokens":[1,"2"]}`, 'tokens[1]');
  await refusedThenServing('/v1/embeddings', `{"model":"tiny","input":${nested(100000)}}`, 'input[0]');
  await refusedThenServing('/v1/feedback', `{"response_id":"x","helpful":${nested(100000)}}`, 'helpful');
});
