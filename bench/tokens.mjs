#!/usr/bin/env node
/**
 * The cost of `labgate.getAccessToken(session)` when the token is fresh: the path every API call of
 * an app takes, which must not touch the store or GitLab. Measured in one run, interleaved, against
 * anchors that name what a cost is:
 *
 *   Map.get                   a plain `Map#get` of a string (the floor: a lookup in memory)
 *   await (resolved)          `await` of an already resolved promise (what any async API costs)
 *   MemoryStore.getSession    a store round trip to the in-memory store (a structured clone)
 *   SQLite getSession         a store round trip to the SQLite store (better-sqlite3, a temp file)
 *   getAccessToken (fresh)    labgate, built (`dist/`), after a real sign-in through the emulator
 *
 *   node bench/tokens.mjs [--rounds 7] [--batch-ms 100] [--max-iterations 20000000] [--no-build] [--no-write]
 *
 * Each round measures every contestant once, in turn, for about --batch-ms (the iteration count is
 * calibrated once, capped by --max-iterations); the table shows the median per contestant. Every
 * loop is bounded by its iteration count and the whole run by a watchdog. During the getAccessToken
 * loops the store is wrapped to count calls and the emulator's request log is read: the run fails if
 * either saw anything. The table and the exact command are written to bench/RESULTS.md under
 * "## getAccessToken (fresh token)" (replacing that section only; --no-write to skip).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);
const HEADING = '## getAccessToken (fresh token)';
const APP = 'http://127.0.0.1:3000';

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '7' },
    'batch-ms': { type: 'string', default: '100' },
    'max-iterations': { type: 'string', default: '20000000' },
    'no-build': { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
  },
});

function fail(message) {
  process.stderr.write(`bench/tokens: ${message}\n`);
  cleanup();
  process.exit(1);
}

function positiveInt(name, value, max) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) fail(`--${name} must be an integer from 1 to ${max}`);
  return n;
}

const rounds = positiveInt('rounds', args.rounds, 50);
const batchMs = positiveInt('batch-ms', args['batch-ms'], 5000);
const maxIterations = positiveInt('max-iterations', args['max-iterations'], 50_000_000);

let emulator;
let tmp;
let sqlite;
function cleanup() {
  emulator?.close().catch(() => {});
  emulator = undefined;
  sqlite?.close().catch(() => {});
  sqlite = undefined;
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  tmp = undefined;
}
process.once('SIGINT', () => fail('interrupted'));
const budgetMs = 60_000 + rounds * 5 * batchMs * 4;
const watchdog = setTimeout(() => fail(`the run took longer than ${budgetMs / 1000} s; stopped`), budgetMs);
watchdog.unref();

// ---------------------------------------------------------------------------------------------
// Build and imports

if (!args['no-build']) {
  const build = spawnSync('npm', ['run', 'build'], { cwd: root, encoding: 'utf8' });
  if (build.status !== 0) fail(`npm run build failed:\n${build.stdout}${build.stderr}`);
}
if (!existsSync(join(root, 'dist/core/index.js'))) fail('dist/ is missing: run `npm run build`');

tmp = mkdtempSync(join(os.tmpdir(), 'labgate-bench-tokens-'));
// The scripted browser of the tests (test/emulator/browser.ts), transpiled as it is.
const ts = (await import('typescript')).default;
writeFileSync(
  join(tmp, 'browser.mjs'),
  ts.transpileModule(readFileSync(join(root, 'test/emulator/browser.ts'), 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText,
);
const { Browser } = await import(pathToFileURL(join(tmp, 'browser.mjs')).href);
const dist = (path) => import(pathToFileURL(join(root, 'dist', path)).href);
const { createLabgate, MemoryStore } = await dist('core/index.js');
const { startEmulator } = await dist('emulator/index.js');
const { createSqliteStore } = await dist('stores/sqlite.js');

// ---------------------------------------------------------------------------------------------
// A real session: sign-in through the emulator, in process

emulator = await startEmulator();
const app = emulator.applications[0];
const memory = new MemoryStore();
const storeCalls = [];
const counted = new Proxy(memory, {
  get(target, name) {
    const value = Reflect.get(target, name);
    if (typeof value !== 'function') return value;
    return (...a) => {
      storeCalls.push(String(name));
      return value.apply(target, a);
    };
  },
});
const labgate = createLabgate({
  gitlabUrl: emulator.url,
  clientId: app.uid,
  clientSecret: app.secret,
  url: APP,
  secret: (await import('node:crypto')).randomBytes(32).toString('base64url'),
  store: counted,
  logger: false,
});
const browser = new Browser({
  fetch: async (input, init) => {
    const request = new Request(input, init);
    if (new URL(request.url).origin !== APP) return fetch(request);
    return (await labgate.handle(request)) ?? new Response('app', { status: 200 });
  },
});
const start = await browser.get(`${APP}/auth/login`);
if (start.status !== 302) fail(`/auth/login answered ${start.status}`);
const alice = emulator.users.find((u) => u.username === 'alice');
const location = await browser.approveToClient({
  url: emulator.url,
  authorizeUrl: start.location,
  login: alice.username,
  password: alice.password,
});
const callback = await browser.get(location);
if (callback.status !== 303)
  fail(`/auth/callback answered ${callback.status}: ${callback.body.slice(0, 300)}`);
const cookie = browser.jar.cookies('127.0.0.1').find((c) => c.name === 'labgate');
if (!cookie) fail('no session cookie after the callback');
const session = await labgate.sessionOf(`labgate=${cookie.value}`);
if (!session) fail('the session cookie is no session');
const token = await labgate.getAccessToken(session);
const record = await memory.getSession(session.id);

sqlite = await createSqliteStore({ path: join(tmp, 'labgate.db') });
await sqlite.setSession(record);
if ((await sqlite.getSession(session.id))?.id !== session.id) fail('SQLite does not return the session');

const map = new Map();
for (let i = 0; i < 1000; i++) map.set(`session-${i}`, `token-${i}`);
map.set(session.id, token);

// ---------------------------------------------------------------------------------------------
// Contestants: `run(n)` does n operations and returns a value that depends on all of them.

const resolved = Promise.resolve(token);
const contestants = [
  {
    key: 'Map.get',
    what: '`Map#get` of a string (anchor)',
    async: false,
    run(n) {
      let sink = 0;
      for (let i = 0; i < n; i++) sink += map.get(session.id).length;
      return sink;
    },
  },
  {
    key: 'await',
    what: '`await` of a resolved promise (anchor)',
    async: true,
    async run(n) {
      let sink = 0;
      for (let i = 0; i < n; i++) sink += (await resolved).length;
      return sink;
    },
  },
  {
    key: 'getAccessToken',
    what: '`labgate.getAccessToken(session)`, fresh token',
    async: true,
    async run(n) {
      let sink = 0;
      for (let i = 0; i < n; i++) sink += (await labgate.getAccessToken(session)).length;
      return sink;
    },
  },
  {
    key: 'memory',
    what: '`MemoryStore#getSession` (anchor: a store round trip)',
    async: true,
    async run(n) {
      let sink = 0;
      for (let i = 0; i < n; i++) sink += (await memory.getSession(session.id)).id.length;
      return sink;
    },
  },
  {
    key: 'sqlite',
    what: 'SQLite `getSession` (anchor: a store round trip)',
    async: true,
    async run(n) {
      let sink = 0;
      for (let i = 0; i < n; i++) sink += (await sqlite.getSession(session.id)).id.length;
      return sink;
    },
  },
];

async function timed(contestant, n) {
  const started = process.hrtime.bigint();
  const sink = await contestant.run(n);
  const ns = Number(process.hrtime.bigint() - started);
  if (!(sink > 0)) fail(`${contestant.key} returned nothing`);
  return ns;
}

// Warm up and calibrate: iterations that take about --batch-ms, within the cap. The faster of two
// timings of at least a quarter batch, so one GC pause does not shrink every later batch.
for (const c of contestants) {
  let n = 1000;
  for (;;) {
    const ns = Math.min(await timed(c, n), await timed(c, n));
    if (ns >= (batchMs * 1e6) / 4 || n >= maxIterations) {
      c.iterations = Math.max(1, Math.min(maxIterations, Math.round((n * batchMs * 1e6) / ns)));
      break;
    }
    n = Math.min(maxIterations, n * 4);
  }
  c.samples = [];
}

const requestsBefore = emulator.control.requests().length;
storeCalls.length = 0;
for (let round = 0; round < rounds; round++) {
  for (const c of contestants) c.samples.push((await timed(c, c.iterations)) / c.iterations);
}
const accessCalls = storeCalls.length;
const gitlabCalls = emulator.control.requests().length - requestsBefore;
// The memory anchor calls the unwrapped store; only getAccessToken could have used the wrapped one.
if (accessCalls !== 0)
  fail(`getAccessToken called the store ${accessCalls} times (${storeCalls.slice(0, 5)})`);
if (gitlabCalls !== 0) fail(`getAccessToken sent ${gitlabCalls} requests to GitLab`);
if ((await labgate.getAccessToken(session)) !== token) fail('the token changed during the run');

// ---------------------------------------------------------------------------------------------
// Report

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
for (const c of contestants) {
  c.ns = median(c.samples);
  const sorted = [...c.samples].sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.round(p * (sorted.length - 1)))];
  c.spread = (q(0.75) - q(0.25)) / c.ns;
}
const anchor = contestants.find((c) => c.key === 'Map.get').ns;
const fmt = (n, digits = 0) =>
  n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const rows = contestants.map((c) => [
  c.what,
  fmt(1e9 / c.ns),
  fmt(c.ns, c.ns < 100 ? 1 : 0),
  `${fmt(c.ns / anchor, c.ns / anchor < 10 ? 1 : 0)}×`,
  `${fmt(c.spread * 100)} %`,
  fmt(c.iterations),
]);
const header = [
  'contestant',
  'ops/s',
  'ns/op',
  'ratio to Map.get',
  'spread (IQR/median)',
  'iterations/batch',
];
const table = [
  `| ${header.join(' | ')} |`,
  `|${header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
  ...rows.map((r) => `| ${r.join(' | ')} |`),
].join('\n');

const command = `node bench/tokens.mjs${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(' ')}` : ''}`;
const cpus = os.cpus();
const machine = `${cpus[0]?.model?.trim() ?? 'unknown CPU'} × ${cpus.length}, Node ${process.version}, ${os.platform()} ${os.release()}`;
const memoryNs = contestants.find((c) => c.key === 'memory').ns;
const accessNs = contestants.find((c) => c.key === 'getAccessToken').ns;
const section = `${HEADING}

\`getAccessToken(session)\` on a fresh token (the path of every GitLab API call an app makes), against a
plain \`Map#get\`, an \`await\` of a resolved promise, and a store round trip (\`getSession\`) to the
in-memory store and to SQLite. Median of ${rounds} interleaved rounds, each contestant about ${batchMs} ms a
round. During the getAccessToken loops the store saw ${accessCalls} calls and GitLab ${gitlabCalls} requests.

Command: \`${command}\` (${new Date().toISOString().slice(0, 10)}; ${machine})

${table}

A fresh \`getAccessToken\` never calls the store and never decrypts: the session keeps its opened
token set beside the sealed one. It costs ${fmt(accessNs / memoryNs, 2)}× a MemoryStore \`getSession\`
and ${fmt(accessNs / contestants.find((c) => c.key === 'sqlite').ns, 2)}× a SQLite one.
`;

process.stdout.write(`\n${section}\n`);

if (!args['no-write']) {
  const path = join(here, 'RESULTS.md');
  let text = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmark results\n';
  const at = text.indexOf(`${HEADING}\n`);
  if (at === -1) {
    text = `${text.replace(/\n*$/, '\n\n')}${section}`;
  } else {
    // Replace this section only: up to the next level-2 heading (another benchmark's) or the end.
    const next = text.indexOf('\n## ', at + HEADING.length);
    text = `${text.slice(0, at)}${section}${next === -1 ? '' : `\n${text.slice(next + 1)}`}`;
  }
  writeFileSync(path, text);
  process.stdout.write(`written to ${path}\n`);
}

cleanup();
clearTimeout(watchdog);
