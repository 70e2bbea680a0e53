// Rate limits across instances, end to end: four llmpool servers share one
// redis-server (started here on a free loopback port) and one data_dir, and
// are hammered at once with one API key, once checking every request in
// Redis and once with allotments (rate_limits.allotment_ms), first against
// the tenant's requests per minute, then against its tokens per minute.
// Together they admit no more than the limit: a bucket of the limit that
// refills at the limit per minute, so over a run of D ms at most
// limit + limit * (D + allotment) / 60 s pass (docs/ratelimits.md). Tokens
// are reserved at admission (prompt + max_tokens) and reconciled with the
// upstream's usage, so the tokens the admitted requests really used stay
// under the same bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, finishServer, startFake, startServer, writeConfig } from './server.mjs';

const LIMIT = 60;  // requests per minute
const TOKEN_LIMIT = 1200;  // tokens per minute, for the token runs
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

for (const [limited, allotment] of [['requests', 0], ['requests', 200], ['tokens', 0], ['tokens', 200]]) {
  test(`${INSTANCES} instances on one Redis admit no more than the ${limited} per minute (allotment_ms: ${allotment})`, async (t) => {
    const rpm = limited === 'requests' ? LIMIT : 100000;
    const tpm = limited === 'tokens' ? TOKEN_LIMIT : 1000000;
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
  - {name: acme, plan: paid, models: ["*"], route_groups: ["*"], requests_per_minute: ${rpm}, tokens_per_minute: ${tpm}}
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
      let used = 0;  // usage.total_tokens of the admitted requests
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
          if (res.status === 200) {
            used += body.usage.total_tokens;
            if (limited === 'tokens') assert.equal(res.headers.get('x-ratelimit-limit-tokens'), String(TOKEN_LIMIT));
          }
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
      // Allotments may leave up to 1/16 of the limit unused in each other instance's open slice.
      const held = (limit) => (allotment > 0 ? (INSTANCES - 1) * Math.floor(limit / 16) : 0);
      const boundOf = (limit) => limit + Math.ceil((limit * (elapsed + allotment)) / 60000);
      if (limited === 'requests') {
        assert.ok(statuses[200] <= boundOf(LIMIT), `${statuses[200]} admitted in ${elapsed} ms, at most ${boundOf(LIMIT)}`);
        assert.ok(statuses[200] >= LIMIT - held(LIMIT), `${statuses[200]} admitted, at least ${LIMIT - held(LIMIT)}`);
      } else {
        t.diagnostic(`${used} tokens used by the admitted requests`);
        assert.ok(used <= boundOf(TOKEN_LIMIT), `${used} tokens used in ${elapsed} ms, at most ${boundOf(TOKEN_LIMIT)}`);
        // Refusals come while admitted requests' reservations (prompt +
        // max_tokens, above what they use) still fill the bucket: a loose floor.
        assert.ok(used >= TOKEN_LIMIT / 3, `${used} tokens used, at least ${TOKEN_LIMIT / 3}`);
      }
    } finally {
      for (const s of servers) await finishServer(s);
      await fake.stop();
      await redis.stop();
    }
  });
}
