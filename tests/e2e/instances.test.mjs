// Rate limits across instances, end to end: four llmpool servers share one
// redis-server (started here on a free loopback port) and one data_dir, and
// are hammered at once with one API key, once checking every request in
// Redis and once with allotments (rate_limits.allotment_ms). Together they
// admit no more than the tenant's requests per minute: a bucket of the limit
// that refills at the limit per minute, so over a run of D ms at most
// limit + limit * (D + allotment) / 60 s pass (docs/ratelimits.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, finishServer, startFake, startServer, writeConfig } from './server.mjs';

const LIMIT = 60;  // requests per minute
const INSTANCES = 4;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// redis-server on a free loopback port, no persistence; stop() kills it.
async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'llmpool-e2e-redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      const pong = execFileSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      if (pong.trim() === 'PONG') {
        return { port, stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGKILL'); }) };
      }
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error('redis-server did not start');
}

for (const allotment of [0, 200]) {
  test(`${INSTANCES} instances on one Redis admit no more than the limit (allotment_ms: ${allotment})`, async (t) => {
    const redis = await startRedis();
    const fake = await startFake({ name: 'up', tokens: 4 });
    const servers = [];
    try {
      const config = writeConfig(`
server:
  io_threads: 1
data_dir: data
auth:
  enabled: true
tenants:
  - {name: acme, plan: paid, models: ["*"], route_groups: ["*"], requests_per_minute: ${LIMIT}, tokens_per_minute: 1000000}
rate_limits:
  url: redis://127.0.0.1:${redis.port}
  allotment_ms: ${allotment}
models:
  - name: up
    type: openai
    base_url: ${fake.baseURL}/v1
    upstream_model: fake
    context: 4096
`);
      const key = execFileSync(BIN, ['keys', 'create', '--config', config, '--tenant', 'acme'], { encoding: 'utf8' })
        .trim().split('\n').pop();
      for (let i = 0; i < INSTANCES; i++) servers.push(await startServer(config));

      const statuses = {};
      let next = 0;
      const total = 5 * LIMIT;
      const t0 = Date.now();
      const worker = async () => {
        for (let i = next++; i < total; i = next++) {
          const res = await fetch(`${servers[i % INSTANCES].baseURL}/v1/chat/completions`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
            body: JSON.stringify({ model: 'up', messages: [{ role: 'user', content: 'hi' }], max_tokens: 16 }),
          });
          const body = await res.json();
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
          if (res.status === 429) {
            assert.equal(body.error.code, 'rate_limit_exceeded');
            assert.ok(Number(res.headers.get('retry-after')) >= 1);
          }
        }
      };
      await Promise.all(Array.from({ length: 16 }, worker));
      const elapsed = Date.now() - t0;
      t.diagnostic(`statuses ${JSON.stringify(statuses)} in ${elapsed} ms`);

      assert.deepEqual(Object.keys(statuses).sort(), ['200', '429'], JSON.stringify(statuses));
      const bound = LIMIT + Math.ceil((LIMIT * (elapsed + allotment)) / 60000);
      assert.ok(statuses[200] <= bound, `${statuses[200]} admitted in ${elapsed} ms, at most ${bound}`);
      // Allotments may leave up to 1/16 of the limit unused in each other instance's open slice.
      const held = allotment > 0 ? (INSTANCES - 1) * Math.floor(LIMIT / 16) : 0;
      assert.ok(statuses[200] >= LIMIT - held, `${statuses[200]} admitted, at least ${LIMIT - held}`);
    } finally {
      for (const s of servers) await finishServer(s);
      await fake.stop();
      await redis.stop();
    }
  });
}
