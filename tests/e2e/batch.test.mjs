// The Files and Batch APIs through the official openai client against the
// real binary on the tiny model: upload, create, poll, download; list and
// cancel; and a batch that a second server on the same data_dir finishes
// after the first one stopped mid-batch.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { startServer, writeConfig, finishServer, TINY_MODEL } from './server.mjs';

const dataDir = mkdtempSync(join(tmpdir(), 'llmpool-batch-e2e-'));
const config = () => writeConfig(`
data_dir: ${dataDir}
batch:
  max_concurrent: 1
models:
  - name: tiny
    type: local
    path: ${TINY_MODEL}
    context: 512
    parallel: 2
    threads: 1
`);

const servers = [];
after(async () => {
  for (const s of servers) await finishServer(s);
  rmSync(dataDir, { recursive: true, force: true });
});

async function start() {
  const server = await startServer(config());
  servers.push(server);
  const client = new OpenAI({ baseURL: `${server.baseURL}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
  return { server, client };
}

async function stop(server) {
  servers.splice(servers.indexOf(server), 1);
  await finishServer(server);
}

function jsonl(n, maxTokens) {
  let text = '';
  for (let i = 0; i < n; i++) {
    text += JSON.stringify({
      custom_id: `req-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model: 'tiny', messages: [{ role: 'user', content: `Count to ${i}.` }], max_tokens: maxTokens, temperature: 0 },
    }) + '\n';
  }
  return text;
}

// Polls until the batch reaches one of `statuses` (generous bound: the machine is shared).
async function waitFor(client, id, statuses, timeoutMs = 120000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const b = await client.batches.retrieve(id);
    if (statuses.includes(b.status)) return b;
    assert.ok(Date.now() < deadline, `batch ${id} stuck in ${b.status}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function lines(text) {
  return text.split('\n').filter((l) => l).map((l) => JSON.parse(l));
}

test('runs a batch end to end: files.create, batches.create, poll, files.content', async () => {
  const { server, client } = await start();
  const file = await client.files.create({ file: await toFile(Buffer.from(jsonl(3, 4)), 'input.jsonl'), purpose: 'batch' });
  assert.match(file.id, /^file-/);
  assert.equal(file.purpose, 'batch');
  assert.equal(file.filename, 'input.jsonl');
  const created = await client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    metadata: { suite: 'e2e' },
  });
  assert.equal(created.status, 'validating');
  assert.deepEqual(created.metadata, { suite: 'e2e' });
  const done = await waitFor(client, created.id, ['completed', 'failed', 'expired', 'cancelled']);
  assert.equal(done.status, 'completed', JSON.stringify(done));
  assert.deepEqual(done.request_counts, { total: 3, completed: 3, failed: 0 });
  assert.equal(done.error_file_id, null);
  const output = lines(await (await client.files.content(done.output_file_id)).text());
  assert.deepEqual(output.map((l) => l.custom_id), ['req-0', 'req-1', 'req-2']);
  for (const l of output) {
    assert.equal(l.response.status_code, 200);
    assert.equal(l.response.body.object, 'chat.completion');
    assert.equal(l.response.body.model, 'tiny');
    assert.ok(l.response.body.usage.completion_tokens <= 4);
    assert.equal(l.error, null);
  }
  const input = await (await client.files.content(file.id)).text();
  assert.equal(input, jsonl(3, 4));

  const listed = [];
  for await (const b of client.batches.list({ limit: 1 })) listed.push(b.id);
  assert.ok(listed.includes(created.id));
  const files = await client.files.list();
  assert.ok(files.data.some((f) => f.id === done.output_file_id && f.purpose === 'batch_output'));
  await stop(server);
});

test('a bad input file fails validation with line numbers', async () => {
  const { server, client } = await start();
  const text = jsonl(1, 4) + '{"custom_id":"x"}\n' + 'nope\n';
  const file = await client.files.create({ file: await toFile(Buffer.from(text), 'bad.jsonl'), purpose: 'batch' });
  const b = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  const failed = await waitFor(client, b.id, ['failed', 'completed']);
  assert.equal(failed.status, 'failed');
  assert.deepEqual(failed.errors.data.map((e) => [e.code, e.line]), [['invalid_method', 2], ['invalid_json_line', 3]]);
  await assert.rejects(client.batches.retrieve('batch_nope'), (e) => e.status === 404);
  await assert.rejects(
    client.batches.create({ input_file_id: file.id, endpoint: '/v1/moderations', completion_window: '24h' }),
    (e) => e.status === 400 && e.param === 'endpoint',
  );
  await stop(server);
});

test('a cancelled batch ends cancelled with partial output', async () => {
  const { server, client } = await start();
  const file = await client.files.create({ file: await toFile(Buffer.from(jsonl(30, 48)), 'c.jsonl'), purpose: 'batch' });
  const b = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  await waitFor(client, b.id, ['in_progress']);
  const cancelling = await client.batches.cancel(b.id);
  assert.ok(['cancelling', 'cancelled'].includes(cancelling.status), cancelling.status);
  const done = await waitFor(client, b.id, ['cancelled']);
  assert.ok(done.request_counts.completed < 30, JSON.stringify(done.request_counts));
  const errors = lines(await (await client.files.content(done.error_file_id)).text());
  assert.ok(errors.length >= 1);
  assert.ok(errors.every((l) => l.error.code === 'batch_cancelled'));
  await stop(server);
});

test('a second server on the same data_dir finishes a batch the first one left', async () => {
  const first = await start();
  const n = 40;
  const file = await first.client.files.create({ file: await toFile(Buffer.from(jsonl(n, 64)), 'r.jsonl'), purpose: 'batch' });
  const b = await first.client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  // Stop once some but not all lines are in.
  let seen;
  for (;;) {
    seen = await first.client.batches.retrieve(b.id);
    if (seen.status !== 'validating' && seen.request_counts.completed >= 1) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(seen.status, 'in_progress', 'the batch finished before the restart; make it longer');
  await stop(first.server);

  const second = await start();
  const resumed = await second.client.batches.retrieve(b.id);
  assert.ok(resumed.request_counts.completed < n);
  const done = await waitFor(second.client, b.id, ['completed', 'failed']);
  assert.equal(done.status, 'completed');
  assert.deepEqual(done.request_counts, { total: n, completed: n, failed: 0 });
  const output = lines(await (await second.client.files.content(done.output_file_id)).text());
  assert.deepEqual(output.map((l) => l.custom_id), Array.from({ length: n }, (_, i) => `req-${i}`));
  await stop(second.server);
});
