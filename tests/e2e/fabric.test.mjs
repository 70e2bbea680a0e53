// The JetStream fabric from the outside: a real nats-server (JetStream, a
// free loopback port), two `llmpool worker` processes and an API node
// (`llmpool serve`) with a `type: queue` model, driven by the official
// openai client. A non-streamed request and a batch survive the SIGKILL of
// the worker that runs them: the job is redelivered and another worker
// answers (docs/fabric.md).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { BIN, startServer, startFake, stopServer, writeConfig, finishServer } from './server.mjs';

const dir = mkdtempSync(join(tmpdir(), 'llmpool-fabric-e2e-'));
let nats;
let natsURL;
let fake;
let api;
let client;
const workers = new Map();  // id -> child

// nats-server with JetStream on a free port; resolves once it listens.
function startNats() {
  return new Promise((resolve, reject) => {
    const child = spawn(process.env.LLMPOOL_NATS_SERVER || 'nats-server', ['-a', '127.0.0.1', '-p', '-1', '-js', '-sd', join(dir, 'js')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let log = '';
    const timer = setTimeout(() => reject(new Error(`nats-server did not start:\n${log}`)), 20000);
    const seen = (d) => {
      log += d;
      const m = log.match(/Listening for client connections on 127\.0\.0\.1:(\d+)/);
      if (m && log.includes('Server is ready')) {
        clearTimeout(timer);
        resolve({ child, url: `nats://127.0.0.1:${m[1]}` });
      }
    };
    child.stdout.on('data', seen);
    child.stderr.on('data', seen);
    child.on('exit', (code) => reject(new Error(`nats-server exited with ${code}:\n${log}`)));
  });
}

function startWorker(id) {
  const config = join(dir, `worker-${id}.yaml`);
  writeFileSync(config, `log_level: warn
server:
  shutdown_grace_ms: 5000
models:
  - name: echo
    type: openai
    base_url: ${fake.baseURL}/v1
    max_concurrent: 2
fabric:
  nats_url: ${natsURL}
  ack_wait: 2s
  heartbeat: 300ms
  nak_delay: 100ms
`);
  const child = spawn(BIN, ['worker', '--config', config, '--id', id], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  child.stderrText = () => stderr;
  workers.set(id, child);
  return child;
}

async function fleet() {
  const r = await fetch(`${api.baseURL}/api/workers`);
  assert.equal(r.status, 200);
  return (await r.json()).data;
}

async function until(what, fn, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The id of a live worker of ours running a job (a killed worker's last
// heartbeat stays in the fleet view until it goes silent: not ours any more).
const busyWorker = () =>
  until('a busy worker', async () => (await fleet()).find((w) => workers.has(w.id) && !w.silent && w.in_flight > 0)?.id);

before(async () => {
  ({ child: nats, url: natsURL } = await startNats());
  // 30 tokens 100 ms apart: a job runs for 3 s, time enough to kill its worker.
  fake = await startFake({ model: 'echo', tokens: 30, tokenMs: 100, text: 'one two three' });
  api = await startServer(writeConfig(`
data_dir: ${join(dir, 'data')}
models:
  - name: echo
    type: queue
fabric:
  nats_url: ${natsURL}
  ack_wait: 2s
  heartbeat: 300ms
  request_timeout: 60s
`));
  client = new OpenAI({ baseURL: `${api.baseURL}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
  startWorker('w0');
  startWorker('w1');
  await until('two live workers', async () => (await fleet()).filter((w) => !w.silent).length === 2);
});

after(async () => {
  if (process.env.LLMPOOL_E2E_DUMP) for (const [id, w] of workers) console.error(`${id}:\n${w.stderrText()}`);
  for (const w of workers.values()) if (w.exitCode === null) await stopServer(w);
  await finishServer(api);
  if (fake) await fake.stop();
  if (nats) await stopServer(nats);
  rmSync(dir, { recursive: true, force: true });
});

// Until every worker of ours reports no job: heartbeats lag, so a test that
// looks for the busy worker starts from an idle fleet, never from the
// previous test's last heartbeat.
const idleFleet = () =>
  until('an idle fleet', async () => {
    const ours = (await fleet()).filter((w) => workers.has(w.id) && !w.silent);
    return ours.length === workers.size && ours.every((w) => w.in_flight === 0);
  });

// Kills the worker running a job and starts a fresh one under a new id.
let restarts = 0;
async function killBusyWorker() {
  const id = await busyWorker();
  const w = workers.get(id);
  w.kill('SIGKILL');
  await new Promise((r) => w.once('exit', r));
  workers.delete(id);
  startWorker(`r${++restarts}`);
  return id;
}

test('a queue model answers a chat through a worker', async () => {
  const r = await client.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.choices[0].message.content, /^\s*one two three\s*$/);
});

test('a non-streamed request whose worker is killed is answered by another worker', async () => {
  await idleFleet();
  const pending = client.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'long' }] });
  await killBusyWorker();
  const r = await pending;  // before the fix: 'stopped answering mid-stream'
  assert.equal(r.object, 'chat.completion');
  assert.match(r.choices[0].message.content, /one two three/);
});

test('a stream whose worker is killed ends with an error, never with the answer twice', async () => {
  await idleFleet();
  const stream = await client.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 's' }], stream: true });
  let text = '';
  let killed = false;
  await assert.rejects(async () => {
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (!killed && text.length > 0) {
        killed = true;
        await killBusyWorker();
      }
    }
  }, /stopped/);
  assert.ok(killed);
  assert.ok(text.trim().split(/\s+/).length <= 30, `more words than one answer has: ${text}`);
});

test('a batch whose worker is killed mid-batch completes every line once', async () => {
  await idleFleet();
  let text = '';
  for (let i = 0; i < 4; i++) {
    text += JSON.stringify({
      custom_id: `line-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: { model: 'echo', messages: [{ role: 'user', content: `n ${i}` }] },
    }) + '\n';
  }
  const file = await client.files.create({ file: await toFile(Buffer.from(text), 'fabric.jsonl'), purpose: 'batch' });
  const b = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  await killBusyWorker();
  const done = await until('the batch to end', async () => {
    const cur = await client.batches.retrieve(b.id);
    return ['completed', 'failed', 'expired', 'cancelled'].includes(cur.status) ? cur : null;
  }, 90000);
  assert.equal(done.status, 'completed', JSON.stringify(done));
  assert.deepEqual(done.request_counts, { total: 4, completed: 4, failed: 0 });
  const out = (await (await client.files.content(done.output_file_id)).text()).split('\n').filter((l) => l).map((l) => JSON.parse(l));
  assert.deepEqual(out.map((l) => l.custom_id).sort(), ['line-0', 'line-1', 'line-2', 'line-3']);
  for (const l of out) assert.equal(l.response.status_code, 200);
});
