// The router end to end: the real llmpool binary in front of
// llmpool-fake-upstream upstreams (speed, errors and stalls changed while it
// runs) and the generated tiny local model. Each test starts its own
// servers on free loopback ports and stops them. Timing bounds are generous:
// the machine is small and shared.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { finishServer, startFake, startServer, writeConfig, TINY_MODEL } from './server.mjs';

// Starts the fakes, then llmpool with the config that `yaml(fakes)` writes;
// runs `body({server, fakes})` and stops everything, whatever happens.
async function withServers(fakeFlags, yaml, body) {
  const fakes = {};
  let server;
  try {
    for (const [name, flags] of Object.entries(fakeFlags)) {
      // The whole text, once: one token per word.
      const tokens = flags.text ? flags.text.split(' ').length : undefined;
      fakes[name] = await startFake({ name, tokens, ...flags });
    }
    server = await startServer(writeConfig(yaml(fakes)));
    await body({ server, fakes });
  } finally {
    for (const f of Object.values(fakes)) await f.stop();
    await finishServer(server);
  }
}

// A `type: openai` model entry for a fake upstream.
function remote(name, fake, extra = '') {
  return `  - name: ${name}
    type: openai
    base_url: ${fake.baseURL}/v1
    upstream_model: fake
    context: 4096
${extra}`;
}

// One non-streamed chat request; the answer, its routing headers and time.
async function chat(server, model, extra = {}) {
  const t0 = performance.now();
  const res = await fetch(`${server.baseURL}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'What is the capital of France?' }],
                           max_tokens: 8, temperature: 0, ...extra }),
  });
  const json = await res.json();
  return { status: res.status, json, model: res.headers.get('x-llmpool-model'),
           reason: res.headers.get('x-llmpool-route-reason'), ms: performance.now() - t0 };
}

async function routingMetrics(server) {
  const res = await fetch(`${server.baseURL}/api/routing-metrics`);
  assert.equal(res.status, 200);
  return res.json();
}

async function instance(server, name) {
  const m = await routingMetrics(server);
  const i = m.instances.find((x) => x.id === name);
  assert.ok(i, `no instance ${name} in ${JSON.stringify(m.instances.map((x) => x.id))}`);
  return i;
}

async function feedback(server, responseId, helpful) {
  const res = await fetch(`${server.baseURL}/v1/feedback`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ response_id: responseId, helpful }),
  });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
  return json;
}

// Polls `check` until it returns something truthy (timeoutMs at most).
async function until(check, what, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function p99(values) {
  const s = [...values].sort((a, b) => a - b);
  const rank = 0.99 * (s.length - 1);
  const lo = Math.floor(rank);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (rank - lo);
}

test('a failing upstream is routed around, its breaker opens, and it recovers through half-open', async () => {
  await withServers(
    {
      'up-a': { ttftMs: 0, text: 'Answer from A' },
      // Slower, so that the router prefers a healthy up-a.
      'up-b': { ttftMs: 600, text: 'Answer from B' },
    },
    (f) => `server:
  io_threads: 2
models:
${remote('up-a', f['up-a'])}
${remote('up-b', f['up-b'])}
routing:
  breaker: {failure_threshold: 2, cooldown_ms: 6000}
  score: {weights: {latency: 0.6, queue: 0.1, fit: 0.1, health: 0.1, feedback: 0.1}}
  groups:
    - name: auto
      models: [up-a, up-b]
      strategy: fastest
      hedge: {max_parallel: 1, default_delay_ms: 0}
`,
    async ({ server, fakes }) => {
      // Healthy: the faster up-a answers.
      let r;
      for (let i = 0; i < 3; i++) {
        r = await chat(server, 'auto');
        assert.equal(r.status, 200, JSON.stringify(r.json));
      }
      assert.equal(r.model, 'up-a');
      assert.equal(r.json.choices[0].message.content, 'Answer from A');

      // up-a fails every request: clients still get answers (from up-b), and
      // after failure_threshold failures up-a gets no more requests (until
      // the cooldown, well over these 4 requests of ~0.6 s).
      await fakes['up-a'].control({ error_rate: 1, error_status: 503, reset_counts: true });
      for (let i = 0; i < 4; i++) {
        r = await chat(server, 'auto');
        assert.equal(r.status, 200, `request ${i}: ${JSON.stringify(r.json)}`);
        assert.equal(r.model, 'up-b');
        assert.equal(r.json.choices[0].message.content, 'Answer from B');
      }
      const a = await fakes['up-a'].state();
      assert.equal(a.counts.errors, 2, `up-a saw ${a.counts.requests} requests; breaker threshold is 2`);
      assert.equal((await instance(server, 'up-a')).breaker_state, 'open');

      // up-a is well again; after the cooldown one probe goes to it
      // (half-open), succeeds, and the breaker closes.
      await fakes['up-a'].control({ error_rate: 0 });
      await until(async () => (await instance(server, 'up-a')).breaker_state === 'half_open',
        'up-a half-open after the cooldown', 15000);
      r = await until(async () => {
        const x = await chat(server, 'auto');
        assert.equal(x.status, 200, JSON.stringify(x.json));
        return x.model === 'up-a' ? x : null;
      }, 'up-a to answer again', 20000);
      assert.equal(r.json.choices[0].message.content, 'Answer from A');
      const after = await instance(server, 'up-a');
      assert.equal(after.breaker_state, 'closed');
      assert.ok(after.breaker_opens >= 1);
    });
});

test('hedging cuts the tail when one upstream stalls', async (t) => {
  // The same two upstreams behind two route groups with separate instance
  // names (separate statistics): one hedges after 100 ms, one does not.
  const rounds = 6;
  await withServers(
    {
      'up-stall': { stall: true },
      'up-ok': { ttftMs: 20, text: 'Answer' },
    },
    (f) => `server:
  io_threads: 2
models:
${remote('stall-h', f['up-stall'], '    read_timeout_ms: 1500')}
${remote('ok-h', f['up-ok'])}
${remote('stall-u', f['up-stall'], '    read_timeout_ms: 1500')}
${remote('ok-u', f['up-ok'])}
routing:
  groups:
    - name: hedged
      models: [stall-h, ok-h]
      strategy: fastest
      hedge: {max_parallel: 2, default_delay_ms: 100}
    - name: unhedged
      models: [stall-u, ok-u]
      strategy: fastest
      hedge: {max_parallel: 1, default_delay_ms: 0}
`,
    async ({ server, fakes }) => {
      const times = {};
      for (const group of ['unhedged', 'hedged']) {
        times[group] = [];
        for (let i = 0; i < rounds; i++) {
          const r = await chat(server, group);
          assert.equal(r.status, 200, `${group} request ${i}: ${JSON.stringify(r.json)}`);
          assert.equal(r.json.choices[0].message.content, 'Answer');
          times[group].push(r.ms);
        }
      }
      const u = p99(times.unhedged), h = p99(times.hedged);
      t.diagnostic(`p99 over ${rounds} requests: unhedged ${u.toFixed(0)} ms, hedged ${h.toFixed(0)} ms`);
      // Without hedging a request that went to the stalled upstream waited
      // for its read timeout (1.5 s); with it, 100 ms and a second attempt.
      assert.ok(u >= 1200, `unhedged p99 ${u.toFixed(0)} ms: no request waited on the stalled upstream`);
      assert.ok(h < u / 2, `hedged p99 ${h.toFixed(0)} ms is not well under unhedged p99 ${u.toFixed(0)} ms`);
      // The hedged loser (a stalled request) was cancelled, not left running.
      await until(async () => (await fakes['up-stall'].state()).counts.active === 0,
        'the stalled upstream to see its requests cancelled');
      assert.ok((await fakes['up-stall'].state()).counts.cancelled >= 1);
    });
});

test('voting and judge answers carry the documented ensemble metadata', { timeout: 240000 }, async () => {
  assert.ok(TINY_MODEL, 'LLMPOOL_TINY_MODEL is not set');
  await withServers(
    {
      'paris-1': { text: 'Paris' },
      'paris-2': { text: 'Paris' },
      lyon: { text: 'Lyon' },
      'judge-2': { text: '{"winner": 2}' },
    },
    (f) => `server:
  io_threads: 2
defaults:
  threads: 1
models:
  - name: tiny
    type: local
    path: ${TINY_MODEL}
    context: 512
    parallel: 2
${remote('paris-1', f['paris-1'])}
${remote('paris-2', f['paris-2'])}
${remote('lyon', f.lyon)}
${remote('judge-2', f['judge-2'])}
routing:
  groups:
    - name: vote
      models: [tiny, paris-1, paris-2]
      strategy: voting
      k: 3
    - name: judged
      models: [paris-1, lyon]
      strategy: judge
      judge: judge-2
    - name: judged-local
      models: [paris-1, lyon]
      strategy: judge
      judge: tiny
`,
    async ({ server }) => {
      // Voting: the two upstreams that say Paris outvote the tiny model.
      let r = await chat(server, 'vote');
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.equal(r.json.choices[0].message.content, 'Paris');
      let e = r.json.llmpool.ensemble;
      assert.equal(e.strategy, 'voting');
      assert.deepEqual(e.candidates.map((c) => c.model).sort(), ['paris-1', 'paris-2', 'tiny']);
      for (const c of e.candidates) {
        assert.equal(typeof c.ok, 'boolean');
        assert.equal(typeof c.votes, 'number');
        assert.equal(typeof c.latency_ms, 'number');
      }
      assert.ok(['paris-1', 'paris-2'].includes(e.winner_model), e.winner_model);
      assert.equal(e.votes, 2);
      assert.equal(e.total_votes, 3);
      assert.ok(Math.abs(e.agreement - 2 / 3) < 1e-6, String(e.agreement));
      assert.equal(typeof e.winner, 'number');
      assert.equal(r.json.llmpool.model, e.winner_model);
      assert.equal(r.model, e.winner_model);

      // Judge: the judge upstream always picks candidate 2 (lyon).
      r = await chat(server, 'judged');
      assert.equal(r.status, 200, JSON.stringify(r.json));
      e = r.json.llmpool.ensemble;
      assert.equal(e.strategy, 'judge');
      assert.deepEqual(e.candidates.map((c) => c.model), ['paris-1', 'lyon']);
      assert.equal(e.winner_model, 'lyon');
      assert.equal(r.json.choices[0].message.content, 'Lyon');
      assert.equal(r.model, 'lyon');
      assert.equal(typeof e.reason, 'string');

      // A local judge (the tiny model, random weights): whatever it says,
      // the answer is one of the candidates and the reason says how.
      r = await chat(server, 'judged-local');
      assert.equal(r.status, 200, JSON.stringify(r.json));
      e = r.json.llmpool.ensemble;
      assert.equal(e.strategy, 'judge');
      assert.ok(['paris-1', 'lyon'].includes(e.winner_model), e.winner_model);
      assert.ok(['Paris', 'Lyon'].includes(r.json.choices[0].message.content));
      assert.ok(e.reason.length > 0);
    });
});

test('a canary whose helpful rate falls below its baseline is switched off', async () => {
  await withServers(
    {
      base: { text: 'Good answer' },
      trial: { text: 'Bad answer' },
    },
    (f) => `server:
  io_threads: 2
models:
${remote('base', f.base)}
${remote('trial', f.trial)}
routing:
  groups:
    - name: auto
      models: [base]
  canary:
    min_samples: 5
    max_helpful_drop: 0.10
    routes:
      - route: auto
        baseline_model: base
        arms: [{name: trial-arm, model: trial, percent: 50}]
`,
    async ({ server }) => {
      // Users split between the arm and the baseline (by a hash of the
      // user id); every answer from trial is rated unhelpful.
      const armUsers = new Set();
      const seen = { base: 0, trial: 0 };
      for (let u = 0; u < 60 && (seen.base < 8 || seen.trial < 8); u++) {
        const user = `user-${u}`;
        const r = await chat(server, 'auto', { user });
        assert.equal(r.status, 200, JSON.stringify(r.json));
        assert.ok(r.model === 'base' || r.model === 'trial', r.model);
        seen[r.model]++;
        if (r.model === 'trial') armUsers.add(user);
        await feedback(server, r.json.id, r.model === 'base');
      }
      assert.ok(seen.trial >= 5 && seen.base >= 5, `too few of each: ${JSON.stringify(seen)}`);

      const m = await routingMetrics(server);
      const route = m.routes.find((x) => x.route === 'auto');
      assert.ok(route, JSON.stringify(m.routes));
      const arm = route.arms.find((a) => a.name === 'trial-arm');
      assert.equal(arm.enabled, false, JSON.stringify(route));
      // ... and said so: a log line and a counter.
      assert.match(server.stderr(), /canary: route 'auto' arm 'trial-arm' switched off/);
      const prom = await (await fetch(`${server.baseURL}/metrics`)).text();
      assert.match(prom, /^llmpool_canary_events_total\{[^}]*kind="auto_disabled"[^}]*\} 1$/m);

      // Users of the arm are back on the baseline.
      for (const user of [...armUsers].slice(0, 3)) {
        const r = await chat(server, 'auto', { user });
        assert.equal(r.status, 200);
        assert.equal(r.model, 'base', `user ${user} still goes to ${r.model}`);
      }
    });
});
