// Authentication end to end: the real binary with auth on, tenants in the
// YAML, a key made by `llmpool keys create`, the official openai client with
// that key, a JWT signed with the configured HS256 secret, and the CLI's
// tenants and keys commands against the same database while it serves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import OpenAI from 'openai';
import { BIN, startServer, writeConfig, TINY_MODEL } from './server.mjs';

const SECRET = 'e2e-secret-0123456789abcdef0123456789abcdef';
let server;
let configPath;

function cli(...args) {
  return execFileSync(BIN, args, { encoding: 'utf8', timeout: 30000 });
}
const lastLine = (out) => out.trim().split('\n').pop();

function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

before(async () => {
  assert.ok(TINY_MODEL, 'LLMPOOL_TINY_MODEL is not set');
  process.env.LLMPOOL_E2E_JWT_SECRET = SECRET;
  configPath = writeConfig(`
server:
  io_threads: 2
data_dir: data
auth:
  enabled: true
  hmac: {enabled: true}
  jwt: {hs256_secret_env: LLMPOOL_E2E_JWT_SECRET, issuer: e2e, audience: llmpool}
tenants:
  - {name: acme, plan: paid, models: ["*"], route_groups: ["*"], max_priority: 5}
  - {name: globex, plan: free, models: [tiny]}
models:
  - name: tiny
    path: ${TINY_MODEL}
    context: 512
    parallel: 2
    threads: 1
  - name: other
    path: ${TINY_MODEL}
    context: 256
    parallel: 1
    threads: 1
`);
  server = await startServer(configPath);  // inherits process.env
});

after(async () => {
  await server?.stop();
});

test('without credentials only /health answers', async () => {
  assert.equal((await fetch(`${server.baseURL}/health`)).status, 200);
  for (const [method, path] of [['GET', '/v1/models'], ['POST', '/v1/chat/completions'], ['GET', '/metrics'],
                                ['GET', '/api/capacity-status'], ['POST', '/api/models/tiny/unload'],
                                ['GET', '/admin/tenants'], ['POST', '/v1/feedback']]) {
    const res = await fetch(`${server.baseURL}${path}`, { method, body: method === 'POST' ? '{}' : undefined });
    assert.equal(res.status, 401, `${method} ${path}`);
    const body = await res.json();
    assert.equal(body.error.code, 'invalid_api_key');
  }
});

test('a key from `keys create` works with the official client', async () => {
  const key = lastLine(cli('keys', 'create', '--config', configPath, '--tenant', 'globex'));
  assert.match(key, /^llmp_[a-z2-7]{8}_[0-9a-f]{48}$/);
  const client = new OpenAI({ apiKey: key, baseURL: `${server.baseURL}/v1`, maxRetries: 0 });
  const r = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4,
  });
  assert.equal(r.object, 'chat.completion');
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['tiny']);
  // Another model is as unknown to globex as a missing one.
  await assert.rejects(
    client.chat.completions.create({ model: 'other', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 }),
    (e) => e.status === 404 && e.code === 'model_not_found');
  // A wrong key is a 401 the client reports as such.
  const bad = new OpenAI({ apiKey: key.slice(0, -1) + (key.endsWith('0') ? '1' : '0'), baseURL: `${server.baseURL}/v1`, maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e.status === 401 && e.code === 'invalid_api_key');
  // Revoked by the CLI while the server runs.
  cli('keys', 'revoke', '--config', configPath, key.slice(5, 13));
  await assert.rejects(client.models.list(), (e) => e.status === 401);
});

test('a JWT signed with the configured secret names its tenant', async () => {
  const now = Math.floor(Date.now() / 1000);
  const token = jwt({ tenant: 'acme', iss: 'e2e', aud: 'llmpool', exp: now + 300 });
  const client = new OpenAI({ apiKey: token, baseURL: `${server.baseURL}/v1`, maxRetries: 0 });
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id).sort(), ['other', 'tiny']);
  const expired = new OpenAI({ apiKey: jwt({ tenant: 'acme', iss: 'e2e', aud: 'llmpool', exp: now - 120 }),
                               baseURL: `${server.baseURL}/v1`, maxRetries: 0 });
  await assert.rejects(expired.models.list(), (e) => e.status === 401);
});

test('HMAC-signed requests are accepted once', async () => {
  const [keyId, secret] = lastLine(cli('keys', 'create', '--config', configPath, '--hmac', '--tenant', 'acme')).split(' ');
  assert.match(keyId, /^hk_[0-9a-f]{16}$/);
  const body = JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
  const path = '/v1/chat/completions?x=1';
  const ts = String(Math.floor(Date.now() / 1000));
  const hash = createHmac('sha256', secret)
    .update(`POST\n${path}\n${ts}\n${createHash('sha256').update(body).digest('hex')}`)
    .digest('hex');
  const headers = { 'content-type': 'application/json', 'x-llmpool-key-id': keyId, 'x-llmpool-timestamp': ts,
                    'x-llmpool-signature': hash };
  const first = await fetch(`${server.baseURL}${path}`, { method: 'POST', headers, body });
  assert.equal(first.status, 200, await first.text());
  const replay = await fetch(`${server.baseURL}${path}`, { method: 'POST', headers, body });
  assert.equal(replay.status, 401);
});

test('admin routes need an admin key; the CLI manages database tenants', async () => {
  const tenantKey = lastLine(cli('keys', 'create', '--config', configPath, '--tenant', 'acme'));
  const res = await fetch(`${server.baseURL}/metrics`, { headers: { authorization: `Bearer ${tenantKey}` } });
  assert.equal(res.status, 403);
  const admin = lastLine(cli('keys', 'create', '--config', configPath, '--admin'));
  const ok = await fetch(`${server.baseURL}/metrics`, { headers: { authorization: `Bearer ${admin}` } });
  assert.equal(ok.status, 200);
  cli('tenants', 'add', 'initech', '--config', configPath, '--models', 'other', '--rpm', '100');
  assert.match(cli('tenants', 'list', '--config', configPath), /initech\tplan=-\tmodels=other/);
  // YAML tenants are read-only for the CLI.
  assert.throws(() => cli('tenants', 'remove', 'acme', '--config', configPath), /declared in/);
  const key = lastLine(cli('keys', 'create', '--config', configPath, '--tenant', 'initech'));
  const client = new OpenAI({ apiKey: key, baseURL: `${server.baseURL}/v1`, maxRetries: 0 });
  assert.deepEqual((await client.models.list()).data.map((m) => m.id), ['other']);
});
