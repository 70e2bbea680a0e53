// Starts the real llmpool binary (and llmpool-fake-upstream upstreams) on
// free loopback ports for a test and stops them after. Shared by the e2e
// test files.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BIN = process.env.LLMPOOL_BIN;
export const TINY_MODEL = process.env.LLMPOOL_TINY_MODEL;

// Writes `yaml` to a fresh temp dir and returns the file's path.
export function writeConfig(yaml) {
  const dir = mkdtempSync(join(tmpdir(), 'llmpool-e2e-'));
  const path = join(dir, 'config.yaml');
  writeFileSync(path, yaml);
  return path;
}

// Starts `llmpool serve` and resolves once it prints its address.
export function startServer(configPath, { timeoutMs = 60000 } = {}) {
  if (!BIN) throw new Error('LLMPOOL_BIN is not set');
  return startProcess('server', BIN, ['serve', '--config', configPath, '--port', '0', '--host', '127.0.0.1'], timeoutMs);
}

export const FAKE_UPSTREAM = process.env.LLMPOOL_FAKE_UPSTREAM;

// Starts llmpool-fake-upstream (bench/README.md) on a free port with the
// given flags, e.g. {name: 'up-a', ttftMs: 20, text: 'Paris'}; resolves to
// the server object plus control(body) (POST /control) and state() (GET).
export async function startFake(flags = {}, { timeoutMs = 30000 } = {}) {
  if (!FAKE_UPSTREAM) throw new Error('LLMPOOL_FAKE_UPSTREAM is not set');
  const args = ['--port', '0'];
  for (const [key, value] of Object.entries(flags)) {
    const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    if (value === true) args.push(flag);
    else if (value !== false && value !== undefined) args.push(flag, String(value));
  }
  const fake = await startProcess('fake upstream', FAKE_UPSTREAM, args, timeoutMs);
  const control = async (body) => {
    const res = await fetch(`${fake.baseURL}/control`, {
      method: body ? 'POST' : 'GET',
      headers: body ? { 'content-type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const json = await res.json();
    if (res.status !== 200) throw new Error(`fake upstream /control: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  return { ...fake, control: (body) => control(body), state: () => control(undefined) };
}

// Starts `bin args` and resolves once it prints "listening on URL".
function startProcess(what, bin, args, timeoutMs) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${what} did not start in ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        resolve({
          child,
          baseURL: m[1],
          stderr: () => stderr,
          stop: () => stopServer(child),
        });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code} before listening; stderr:\n${stderr}`));
    });
  });
}

// SIGTERM, then wait; resolves to the exit code (SIGKILL after 20 s).
export function stopServer(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    const killer = setTimeout(() => child.kill('SIGKILL'), 20000);
    child.once('exit', (code, signal) => {
      clearTimeout(killer);
      resolve(code ?? signal);
    });
    child.kill('SIGTERM');
  });
}

// Copies the tiny model into `dir` once per name in `names` (a.gguf, b.gguf, ...).
export function copyTinyModels(dir, names) {
  for (const n of names) copyFileSync(TINY_MODEL, join(dir, n));
}

// Stops `server` (if it started) and checks that it exited cleanly.
// LLMPOOL_E2E_DUMP=1 prints its log first, to see what it did during a failure.
export async function finishServer(server) {
  if (process.env.LLMPOOL_E2E_DUMP) console.error(server?.stderr());
  if (!server) return;
  const code = await server.stop();
  assert.equal(code, 0, `server exit code; stderr:\n${server.stderr()}`);
}
