#!/usr/bin/env node
/**
 * Authenticated `GET /me` requests per second: labgate/express against bare Express (the anchor),
 * express-session + passport-gitlab2, and @auth/express (JWT sessions), interleaved in one run and
 * reported as ratios to bare Express.
 *
 *   node bench/me.mjs [--rounds 5] [--duration 5] [--connections 50] [--threads 1] [--warmup 2]
 *                     [--retries 2] [--max-other-load 0.25] [--shape] [--shape-async]
 *                     [--ref REF | --dist DIR] [--candidate DIR] [--only KEYS]
 *                     [--no-build] [--no-write] [--profile] [--check]
 *
 * Each contestant is its own Node process (bench/servers/*.mjs) on 127.0.0.1 with a free port; the
 * load generator is wrk (Debian's: `apt-get install -y wrk`), another process. Nothing is pinned.
 * Every request loop is bounded in time (wrk -d) and the whole run by a watchdog.
 *
 *   --no-build   measure the dist/ that is there instead of running `npm run build` first
 *   --profile    run the bare, shape, labgate and candidate servers under `node --cpu-prof` (profiles
 *                in bench/profiles/) and print their hottest functions per request (profile-summary.mjs)
 *   --no-write   do not write the table to bench/RESULTS.md (runs with --only never write)
 *   --check      exit 1 when labgate is below its target (0.90 of bare Express) or a run stayed noisy
 *   --shape      add the anchor with labgate's app shape and no authentication (bench/servers/shape.mjs):
 *                what one more middleware and one more route handler cost in Express itself
 *   --shape-async  the same shape, next() called from a promise continuation (key shapeAsync)
 *   --only KEYS  measure only these contestants (comma-separated: labgate, passport, authjs, shape,
 *                candidate; the anchor is always measured); for a quick A/B, not for RESULTS.md
 *   --ref REF    build the labgate of a git commit (git archive REF src | tsc, in a temporary folder) and
 *                serve that: measures committed code whatever state the work tree is in
 *   --dist DIR   serve labgate/express from another build of dist/ (DIR holds core/ and adapters/)
 *                instead of the package's dist/ (implies --no-build)
 *   --candidate DIR   add a contestant: labgate/express from another build of dist/ (DIR holds
 *                core/ and adapters/), to measure two builds side by side
 *
 * Besides req/s, each run reads from /proc the server's CPU time per request and the CPU the rest of
 * the machine used meanwhile ("other load", in cores: neither the server nor wrk nor this script).
 * A run during which other processes used more than --max-other-load cores is measured again, at
 * most --retries times, and flagged in the table if it stays noisy.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);
const TARGET = 0.9;

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '50' },
    threads: { type: 'string', default: '1' },
    warmup: { type: 'string', default: '2' },
    retries: { type: 'string', default: '2' },
    'max-other-load': { type: 'string', default: '0.25' },
    candidate: { type: 'string' },
    dist: { type: 'string' },
    ref: { type: 'string' },
    shape: { type: 'boolean', default: false },
    only: { type: 'string' },
    'shape-async': { type: 'boolean', default: false },
    'no-build': { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    check: { type: 'boolean', default: false },
    stores: { type: 'boolean', default: false },
  },
});
const rounds = positiveInt('rounds', args.rounds, 20);
const duration = positiveInt('duration', args.duration, 60);
const connections = positiveInt('connections', args.connections, 1000);
const threads = positiveInt('threads', args.threads, 8);
const warmup = positiveInt('warmup', args.warmup, 30, 0);
const retries = positiveInt('retries', args.retries, 5, 0);
const maxOtherLoad = Number(args['max-other-load']);
if (!(maxOtherLoad >= 0)) fail('--max-other-load must be a number of cores ≥ 0');
const candidateDist = args.candidate ? resolvePath(args.candidate) : undefined;
let labgateDist = args.dist ? resolvePath(args.dist) : undefined;
if (args.dist && args.ref) fail('--dist and --ref exclude each other');

function positiveInt(name, value, max, min = 1) {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) fail(`--${name} must be an integer in [${min}, ${max}]`);
  return n;
}

function fail(message) {
  process.stderr.write(`bench: ${message}\n`);
  cleanup();
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// Processes we start, stopped by their own handle at the end (or by the watchdog).

const children = new Set();
let emulator;
let tmp;

function cleanup() {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  children.clear();
  emulator?.close().catch(() => {});
  emulator = undefined;
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  tmp = undefined;
}
// Whatever happens (an exception included), the servers and wrk we started do not outlive us.
process.once('exit', () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
});
process.once('SIGINT', () => fail('interrupted'));
process.once('SIGTERM', () => fail('terminated'));

const perRun = duration + 5;
const budget = (7 * (warmup + 5) + rounds * 7 * perRun * (1 + retries) + 120) * 1000;
const watchdog = setTimeout(() => fail(`the run took longer than ${budget / 1000} s; stopped`), budget);

// ---------------------------------------------------------------------------------------------
// Preconditions and build

const wrkVersion = spawnSync('wrk', ['--version'], { encoding: 'utf8' });
if (wrkVersion.error) fail('wrk is not installed: apt-get install -y wrk');
const wrkName = `${wrkVersion.stdout}${wrkVersion.stderr}`.split('\n')[0].trim();

if (!args['no-build'] && !labgateDist && !args.ref) {
  process.stderr.write('bench: npm run build\n');
  const build = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (build.status !== 0) fail('npm run build failed (pass --no-build to measure the dist/ that is there)');
}

tmp = mkdtempSync(join(os.tmpdir(), 'labgate-bench-'));

// --stores: labgate on each store of the persistence issue, and express-session on Redis.
const STORE_CONTESTANTS = [
  {
    key: 'sqlite',
    label: 'labgate/express on SQLite',
    target: '≥ 0.90',
    store: () => `sqlite:${join(tmp, 'bench.db')}`,
  },
  {
    key: 'postgres',
    label: 'labgate/express on PostgreSQL',
    target: '≥ 0.80',
    store: () => `postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3Dlg_bench`,
  },
  {
    key: 'redis',
    label: 'labgate/express on Redis',
    target: '≥ 0.80',
    store: () => 'redis://127.0.0.1:6379?prefix=lg_bench:',
  },
];
let refCommit;
if (args.ref) {
  // The committed sources of REF, compiled as `npm run build` compiles them; packages from this checkout.
  refCommit = spawnSync('git', ['rev-parse', '--short', `${args.ref}^{commit}`], {
    cwd: root,
    encoding: 'utf8',
  });
  if (refCommit.status !== 0) fail(`--ref ${args.ref}: not a commit`);
  refCommit = refCommit.stdout.trim();
  const tree = join(tmp, 'ref');
  mkdirSync(tree);
  const archive = spawnSync(
    'sh',
    [
      '-c',
      `git archive ${refCommit} src tsconfig.json tsconfig.build.json package.json | tar -x -C "${tree}"`,
    ],
    { cwd: root, encoding: 'utf8' },
  );
  if (archive.status !== 0) fail(`git archive ${refCommit} failed: ${archive.stderr}`);
  symlinkSync(join(root, 'node_modules'), join(tree, 'node_modules'), 'dir');
  process.stderr.write(`bench: building labgate at ${refCommit}\n`);
  const tsc = spawnSync(
    process.execPath,
    [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'],
    {
      cwd: tree,
      encoding: 'utf8',
    },
  );
  if (tsc.status !== 0) fail(`building ${refCommit} failed:\n${tsc.stdout}${tsc.stderr}`);
  labgateDist = join(tree, 'dist');
}

// The scripted browser of the tests (test/emulator/browser.ts), transpiled as it is: the same
// GitLab sign-in walk the Express adapter's tests do.
const ts = (await import('typescript')).default;
writeFileSync(
  join(tmp, 'browser.mjs'),
  ts.transpileModule(readFileSync(join(root, 'test/emulator/browser.ts'), 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText,
);
const { Browser } = await import(pathToFileURL(join(tmp, 'browser.mjs')).href);
const { startEmulator } = await import('labgate/emulator');
const { encode } = await import('@auth/core/jwt');

// ---------------------------------------------------------------------------------------------
// Servers

emulator = await startEmulator();
const app = emulator.applications[0];
const secrets = {
  LABGATE_SECRET: randomBytes(32).toString('base64url'),
  SESSION_SECRET: randomBytes(32).toString('base64url'),
  AUTH_SECRET: randomBytes(32).toString('base64url'),
};
const serverEnv = {
  ...process.env,
  NODE_ENV: 'production',
  GITLAB_URL: emulator.url,
  GITLAB_CLIENT_ID: app.uid,
  GITLAB_CLIENT_SECRET: app.secret,
  BENCH_SERVER_LIFETIME_MS: String(budget + 30_000),
  ...secrets,
};
const profileDir = join(here, 'profiles');

/** Spawns bench/servers/NAME.mjs and waits for its `READY {json}` line. */
function startServer(name, { profile = false, as = name, env = {} } = {}) {
  const flags = profile
    ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${as}.cpuprofile`]
    : [];
  const child = spawn(process.execPath, [...flags, join(here, 'servers', `${name}.mjs`)], {
    cwd: root,
    env: { ...serverEnv, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  // Passed on, except express-session's warning (in production mode) that MemoryStore is for one process.
  const known = /MemoryStore is not|designed for a production environment|memory, and will not scale/;
  createInterface({ input: child.stderr }).on('line', (line) => {
    if (!known.test(line)) process.stderr.write(`${as}: ${line}\n`);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 20 s`)), 20_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited before it was ready (${code ?? signal})`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.startsWith('READY ')) return;
      clearTimeout(timer);
      resolve({ name: as, child, ...JSON.parse(line.slice(6)) });
    });
  });
}

if (args.profile) {
  rmSync(profileDir, { recursive: true, force: true });
  mkdirSync(profileDir, { recursive: true });
}
if (args.stores) {
  // PostgreSQL: the bench's own schema in the `test` database (migrations create the tables in it).
  const pg = (await import('pg')).default;
  const client = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' });
  await client.connect();
  await client.query('CREATE SCHEMA IF NOT EXISTS lg_bench');
  await client.end();
}
const servers = {};
try {
  const started = await Promise.all([
    startServer('bare', { profile: args.profile }),
    startServer('labgate', { profile: args.profile, env: labgateDist ? { LABGATE_DIST: labgateDist } : {} }),
    startServer('passport'),
    startServer('authjs'),
    ...(args.shape ? [startServer('shape', { profile: args.profile })] : []),
    ...(args.stores
      ? [
          ...STORE_CONTESTANTS.map((c) =>
            startServer('labgate', {
              as: c.key,
              env: { LABGATE_STORE: c.store(), ...(labgateDist ? { LABGATE_DIST: labgateDist } : {}) },
            }),
          ),
          startServer('passport', {
            as: 'connectRedis',
            env: { SESSION_REDIS_URL: 'redis://127.0.0.1:6379' },
          }),
        ]
      : []),
    ...(args['shape-async'] ? [startServer('shape', { as: 'shapeAsync', env: { SHAPE_ASYNC: '1' } })] : []),
    ...(candidateDist
      ? [
          startServer('labgate', {
            as: 'candidate',
            env: { LABGATE_DIST: candidateDist },
            profile: args.profile,
          }),
        ]
      : []),
  ]);
  for (const server of started) servers[server.name] = server;
} catch (error) {
  fail(error.message);
}

// ---------------------------------------------------------------------------------------------
// Sessions: one real session cookie per contestant

function expectStatus(what, page, status) {
  if (page.status !== status)
    fail(`${what}: expected ${status}, got ${page.status}\n${String(page.body).slice(0, 500)}`);
}

/** labgate: sign Alice in through the app's own routes and the emulator's sign-in and consent pages. */
async function labgateCookie({ origin, cookieName }) {
  const browser = new Browser();
  const start = await browser.get(`${origin}/auth/login?returnTo=%2Fme`);
  expectStatus('labgate /auth/login', start, 302);
  const alice = emulator.users.find((u) => u.username === 'alice');
  const location = await browser.approveToClient({
    url: emulator.url,
    authorizeUrl: start.location,
    login: alice.username,
    password: alice.password,
  });
  const callback = await browser.get(location);
  expectStatus('labgate /auth/callback', callback, 303);
  const cookie = browser.jar.cookies(new URL(origin).hostname).find((c) => c.name === cookieName);
  if (!cookie) fail('labgate set no session cookie after the callback');
  return `${cookie.name}=${cookie.value}`;
}

/** express-session + passport: the bench-only route calls req.login(user) once. */
async function passportCookie({ origin, cookieName }) {
  const res = await fetch(`${origin}/bench/login`, { method: 'POST' });
  if (res.status !== 200) fail(`passport /bench/login answered ${res.status}`);
  const set = res.headers.getSetCookie().find((c) => c.startsWith(`${cookieName}=`));
  if (!set) fail('passport set no session cookie');
  return set.split(';')[0];
}

/** Auth.js: a JWT session token as Auth.js itself encodes it (salt = cookie name). */
async function authjsCookie({ cookieName }) {
  const token = await encode({
    token: { sub: '1', id: 1, username: 'alice', name: 'Alice Liddell', email: 'alice@acme.test' },
    secret: secrets.AUTH_SECRET,
    salt: cookieName,
    maxAge: 24 * 3600,
  });
  return `${cookieName}=${token}`;
}

const ALICE = { id: 1, username: 'alice', name: 'Alice Liddell', email: 'alice@acme.test' };
try {
  servers.labgate.cookie = await labgateCookie(servers.labgate);
  servers.passport.cookie = await passportCookie(servers.passport);
  servers.authjs.cookie = await authjsCookie(servers.authjs);
  if (servers.candidate) servers.candidate.cookie = await labgateCookie(servers.candidate);
  if (args.stores) {
    for (const c of STORE_CONTESTANTS) servers[c.key].cookie = await labgateCookie(servers[c.key]);
    servers.connectRedis.cookie = await passportCookie(servers.connectRedis);
  }
  // The anchor gets a Cookie header of the same kind (it ignores it), so every server parses one.
  servers.bare.cookie = servers.labgate.cookie;
  if (servers.shape) servers.shape.cookie = servers.labgate.cookie;
  if (servers.shapeAsync) servers.shapeAsync.cookie = servers.labgate.cookie;
} catch (error) {
  fail(`getting the session cookies failed: ${error.stack ?? error}`);
}
// GitLab is not needed any more: a /me that still called it would now fail, and show.
await emulator.close();
emulator = undefined;

/** 200 with Alice's JSON with the cookie; 401 without (except for the anchor, which has no auth). */
async function verify(server) {
  const url = `${server.origin}/me`;
  const signedIn = await fetch(url, { headers: { cookie: server.cookie } });
  const body = await signedIn.text();
  server.response = `${signedIn.status}, ${[...signedIn.headers.keys()].join(' ')}, ${body.length} bytes`;
  if (signedIn.status !== 200)
    fail(`${server.name}: GET /me with its cookie answered ${signedIn.status}: ${body.slice(0, 300)}`);
  let user;
  try {
    user = JSON.parse(body);
  } catch {
    fail(`${server.name}: GET /me is not JSON: ${body.slice(0, 300)}`);
  }
  if (JSON.stringify(user) !== JSON.stringify(ALICE))
    fail(`${server.name}: GET /me returned ${body}, expected ${JSON.stringify(ALICE)}`);
  if (server.name === 'bare') return;
  const anonymous = await fetch(url);
  if (anonymous.status !== 401)
    fail(`${server.name}: GET /me without a session answered ${anonymous.status}, expected 401`);
  await anonymous.arrayBuffer();
}

const contestants = [
  { key: 'bare', label: 'bare Express (anchor)', target: 'anchor' },
  {
    key: 'labgate',
    label: `labgate/express (server sessions, MemoryStore)${
      refCommit ? ` at ${refCommit}` : labgateDist ? `, build in ${relativeTo(labgateDist)}` : ''
    }`,
    target: `≥ ${TARGET.toFixed(2)}`,
  },
  { key: 'passport', label: 'express-session + passport-gitlab2 (MemoryStore)', target: '— (issue: 0.62)' },
  { key: 'authjs', label: '@auth/express (JWT sessions)', target: '— (issue: 0.13)' },
];
if (args.stores) {
  contestants.push(...STORE_CONTESTANTS.map(({ store: _store, ...c }) => c));
  contestants.push({
    key: 'connectRedis',
    label: 'express-session + connect-redis + passport-gitlab2',
    target: '—',
  });
}
if (args['shape-async']) {
  contestants.splice(1, 0, {
    key: 'shapeAsync',
    label: 'bare Express, same shape, next() after a promise (no auth)',
    target: '—',
  });
}
if (args.shape) {
  contestants.splice(1, 0, {
    key: 'shape',
    label: 'bare Express with labgate’s app shape (middleware + guard, no auth)',
    target: '—',
  });
}
if (candidateDist) {
  contestants.splice(contestants.findIndex((c) => c.key === 'labgate') + 1, 0, {
    key: 'candidate',
    label: `labgate/express, other build (${relativeTo(candidateDist)})`,
    target: `≥ ${TARGET.toFixed(2)}`,
  });
}
function relativeTo(path) {
  return path.startsWith(`${root}/`) ? path.slice(root.length + 1) : path;
}
if (args.only) {
  const keep = new Set(['bare', ...args.only.split(',').map((k) => k.trim())]);
  for (const key of keep) if (!contestants.some((c) => c.key === key)) fail(`--only: no contestant ${key}`);
  contestants.splice(0, contestants.length, ...contestants.filter((c) => keep.has(c.key)));
}
for (const c of contestants) {
  await verify(servers[c.key]);
  process.stderr.write(`bench: ${c.key.padEnd(10)} GET /me → ${servers[c.key].response}\n`);
}

// ---------------------------------------------------------------------------------------------
// Load, and where the CPU went meanwhile (/proc, in clock ticks)

const TICK_US = 1e6 / (Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100);

/** Busy ticks of the whole machine (all CPUs). */
function machineBusy() {
  const [user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8')
    .split('\n', 1)[0]
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  return user + nice + system + irq + softirq + steal;
}

/** User + system ticks of a process; with `children`, also of its reaped children (wrk). */
function processTicks(pid, children = false) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  // Fields 14-17 of proc(5): utime stime cutime cstime; f[0] is field 3.
  return f[11] + f[12] + (children ? f[13] + f[14] : 0);
}

function snapshot(server) {
  return {
    at: process.hrtime.bigint(),
    machine: machineBusy(),
    server: processTicks(server.child.pid),
    self: processTicks('self', true),
  };
}

function wrk(server, seconds) {
  const wrkArgs = [
    `-t${threads}`,
    `-c${connections}`,
    `-d${seconds}s`,
    '--timeout',
    '2s',
    '--latency',
    '-H',
    `Cookie: ${server.cookie}`,
    `${server.origin}/me`,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', wrkArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
    children.add(child);
    const kill = setTimeout(() => child.kill('SIGTERM'), (seconds + 10) * 1000);
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(kill);
      children.delete(child);
      if (code !== 0) return reject(new Error(`wrk exited with ${code}:\n${out}`));
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
      const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
      const errors = /Socket errors:([^\n]*)/.exec(out)?.[1]?.trim() ?? null;
      const p50 = /\n\s+50%\s+(\S+)/.exec(out)?.[1] ?? '?';
      const p99 = /\n\s+99%\s+(\S+)/.exec(out)?.[1] ?? '?';
      const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
      if (!Number.isFinite(rps)) return reject(new Error(`no Requests/sec in wrk's output:\n${out}`));
      resolve({ rps, requests, non2xx, errors, p50, p99, raw: out });
    });
  });
}

async function measure(c, seconds) {
  const server = servers[c.key];
  let result;
  const before = snapshot(server);
  try {
    result = await wrk(server, seconds);
  } catch (error) {
    fail(`${c.key}: ${error.message}`);
  }
  const after = snapshot(server);
  const wallUs = Number(after.at - before.at) / 1000;
  const serverTicks = after.server - before.server;
  const otherTicks = after.machine - before.machine - serverTicks - (after.self - before.self);
  result.cpuPerRequestUs = (serverTicks * TICK_US) / result.requests;
  result.serverCores = (serverTicks * TICK_US) / wallUs;
  result.otherLoad = Math.max(0, (otherTicks * TICK_US) / wallUs);
  server.requests = (server.requests ?? 0) + result.requests;
  if (result.non2xx > 0) fail(`${c.key}: ${result.non2xx} responses were not 2xx/3xx:\n${result.raw}`);
  if (result.errors) fail(`${c.key}: socket errors ${result.errors}:\n${result.raw}`);
  return result;
}

const command = `node bench/me.mjs${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`;
const wrkCommand = `wrk -t${threads} -c${connections} -d${duration}s --timeout 2s --latency -H 'Cookie: <session>' http://127.0.0.1:<port>/me`;
process.stderr.write(`bench: ${wrkCommand}\n`);
if (warmup > 0) {
  process.stderr.write(`bench: warm-up ${warmup} s each\n`);
  for (const c of contestants) await measure(c, warmup);
}
const samples = Object.fromEntries(contestants.map((c) => [c.key, []]));
for (let round = 1; round <= rounds; round++) {
  for (const c of contestants) {
    let result;
    for (let attempt = 0; attempt <= retries; attempt++) {
      result = await measure(c, duration);
      process.stderr.write(
        `bench: round ${round}/${rounds} ${c.key.padEnd(9)} ${result.rps.toFixed(0).padStart(7)} req/s  ` +
          `p50 ${result.p50.padStart(7)}  p99 ${result.p99.padStart(8)}  server ${result.cpuPerRequestUs.toFixed(0)} µs/req ` +
          `(${result.serverCores.toFixed(2)} cores)  other load ${result.otherLoad.toFixed(2)} cores` +
          `${result.otherLoad > maxOtherLoad ? (attempt < retries ? ' - noisy, again' : ' - noisy, kept') : ''}\n`,
      );
      if (result.otherLoad <= maxOtherLoad) break;
    }
    samples[c.key].push(result);
  }
}
// Still the same signed-in users after the load (no session expired or was rotated away).
if (args.only) {
  const keep = new Set(['bare', ...args.only.split(',').map((k) => k.trim())]);
  for (const key of keep) if (!contestants.some((c) => c.key === key)) fail(`--only: no contestant ${key}`);
  contestants.splice(0, contestants.length, ...contestants.filter((c) => keep.has(c.key)));
}
for (const c of contestants) await verify(servers[c.key]);

// ---------------------------------------------------------------------------------------------
// Report

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const medians = Object.fromEntries(contestants.map((c) => [c.key, median(samples[c.key].map((r) => r.rps))]));
const anchor = medians.bare;
const ratio = (key) => medians[key] / anchor;

const version = (name) => {
  try {
    return JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return '?';
  }
};
const git = (...a) => spawnSync('git', a, { cwd: root, encoding: 'utf8' }).stdout.trim();
const dirty = git('status', '--porcelain', '--', 'src').length > 0;

const lines = [];
lines.push(`Command: \`${command}\``);
lines.push(
  `Load: \`${wrkCommand}\`, ${rounds} interleaved rounds after a ${warmup} s warm-up each; median per contestant.`,
);
lines.push('');
lines.push(
  '| contestant | req/s (median) | rounds (req/s) | ratio to bare Express | target | server CPU µs/req (median) | ratio by CPU/req | other load (max, cores) |',
);
lines.push('|---|---:|---|---:|---|---:|---:|---:|');
const cpu = Object.fromEntries(
  contestants.map((c) => [c.key, median(samples[c.key].map((r) => r.cpuPerRequestUs))]),
);
let noisy = 0;
for (const c of contestants) {
  const runs = samples[c.key];
  const r = ratio(c.key);
  const goal = /^≥ ([\d.]+)/.exec(c.target);
  const verdict = goal ? (r >= Number(goal[1]) ? ' ✔' : ' ✘') : '';
  const other = Math.max(...runs.map((x) => x.otherLoad));
  noisy += runs.filter((x) => x.otherLoad > maxOtherLoad).length;
  lines.push(
    `| ${c.label} | ${medians[c.key].toFixed(0)} | ${runs.map((x) => x.rps.toFixed(0)).join(', ')} | ` +
      `${r.toFixed(2)} | ${c.target}${verdict} | ${cpu[c.key].toFixed(0)} | ${(cpu.bare / cpu[c.key]).toFixed(2)} | ` +
      `${other.toFixed(2)}${other > maxOtherLoad ? ' (noisy)' : ''} |`,
  );
}
if (noisy > 0) {
  lines.push('');
  lines.push(
    `${noisy} of ${rounds * contestants.length} runs had other processes using more than ${maxOtherLoad} cores ` +
      `even after ${retries} retries: the req/s of those runs understate what the server can do.`,
  );
}
lines.push('');
lines.push(
  `Machine: ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? '?'}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
    `${os.type()} ${os.release()}; Node ${process.version}; ${wrkName}; ${new Date().toISOString()}.`,
);
lines.push(
  `Versions: labgate ${version('labgate')} (${
    refCommit
      ? `built from commit ${refCommit}`
      : labgateDist
        ? `build in ${relativeTo(labgateDist)}; checkout at ${git('rev-parse', '--short', 'HEAD')}`
        : `dist/ of git ${git('rev-parse', '--short', 'HEAD')}${dirty ? ' with uncommitted changes in src/' : ''}`
  }), ` +
    `express ${version('express')}, express-session ${version('express-session')}, passport ${version('passport')}, ` +
    `passport-gitlab2 ${version('passport-gitlab2')}, @auth/express ${version('@auth/express')}, @auth/core ${version('@auth/core')}.`,
);
process.stdout.write(`${lines.join('\n')}\n`);

const HEADING = '## GET /me requests per second (Express)';
if (!args['no-write'] && !args.only) {
  const section = `${HEADING}

Authenticated \`GET /me\` through labgate/express against bare Express (the anchor),
express-session + passport-gitlab2 and @auth/express (JWT sessions); written by \`bench/me.mjs\`
(see bench/README.md). "Server CPU µs/req" is the server process's CPU time per answered request
(from /proc), "other load" the CPU other processes of the machine used meanwhile: on a shared 2-core
machine req/s swings with it, CPU per request much less.

${lines.join('\n')}
`;
  const path = join(here, 'RESULTS.md');
  let text = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmark results\n';
  const at = text.indexOf(`${HEADING}\n`);
  if (at === -1) text = `${text.replace(/\n*$/, '\n\n')}${section}`;
  else {
    // Replace this section only: up to the next level-2 heading (another benchmark's) or the end.
    const next = text.indexOf('\n## ', at + HEADING.length);
    text = `${text.slice(0, at)}${section}${next === -1 ? '' : `\n${text.slice(next + 1)}`}`;
  }
  writeFileSync(path, text);
  process.stderr.write(`bench: written to ${path}\n`);
}

clearTimeout(watchdog);
const profiled = ['bare', 'shape', 'labgate', 'candidate'].map((k) => servers[k]).filter(Boolean);
cleanup();
if (args.profile) {
  await Promise.all(
    profiled.map(
      ({ child }) => new Promise((done) => (child.exitCode !== null ? done() : child.once('exit', done))),
    ),
  );
  if (!readdirSync(profileDir).some((f) => f.endsWith('.cpuprofile'))) fail('no CPU profile was written');
  for (const { name, requests } of profiled) {
    const file = `${name}.cpuprofile`;
    const summary = spawnSync(
      process.execPath,
      [join(here, 'profile-summary.mjs'), join(profileDir, file), '--requests', String(requests)],
      { encoding: 'utf8' },
    );
    process.stdout.write(
      `\nCPU profile (${join('bench/profiles', file)}):\n${summary.stdout}${summary.stderr}`,
    );
  }
}
if (args.check && (ratio('labgate') < TARGET || noisy > 0)) {
  process.stderr.write(
    `bench: labgate/express is at ${ratio('labgate').toFixed(2)} of bare Express (target ${TARGET})${noisy ? `; ${noisy} noisy runs` : ''}\n`,
  );
  process.exit(1);
}
