#!/usr/bin/env node
/**
 * Authenticated `GET /me` requests per second: labgate/express against bare Express (the anchor),
 * express-session + passport-gitlab2, and @auth/express (JWT sessions), interleaved in one run and
 * reported as ratios to bare Express.
 *
 *   node bench/me.mjs [--rounds 5] [--duration 5] [--connections 50] [--threads 1] [--warmup 2]
 *                     [--retries 2] [--max-other-load 0.25] [--prime 0] [--twin] [--shape] [--shape-async]
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
 *   --prime S    before each measured run, S seconds of the same load on the same process, not measured:
 *                a process that sat idle while the others ran answers its first seconds more slowly
 *                (V8 and the caches warm up again), so a short run without it measures that too
 *   --twin       add bare Express again, in processes of its own (key bareTwin): the A/A control, what
 *                the method shows between two identical servers (1.00 when it is fair)
 *   --shape      add the anchor with labgate's app shape and no authentication (bench/servers/shape.mjs):
 *                what one more middleware and one more route handler cost in Express itself
 *   --shape-async  the same shape, next() called from a promise continuation (key shapeAsync)
 *   --shape-loaded the same shape in a process that loaded labgate and discovered GitLab, with none
 *                of it on /me (key shapeLoaded): what the larger process alone costs; and its two
 *                halves: a process that only imported labgate (shapeImported), one that only fetched
 *                GitLab's discovery document (shapeFetched)
 *   --shape-parts  each half of the shape alone: only the app.use middleware (key shapeUse), only
 *                the route guard (key shapeGuard); and what the shape's parts cost: a guard that sets
 *                nothing (shapeBare), one property added to req (shapeProperty), res.locals (shapeLocals),
 *                a WeakMap keyed by req (shapeWeakMap); the guard behind a middleware mounted at /auth
 *                that never answered (shapeMounted) or answered the two requests of a sign-in before
 *                the load (shapeMountedUsed)
 *   --labgate-parts  labgate's prefix form taken apart, each in a signed-in labgate process: /me behind a
 *                guard that only checks for a Cookie header (labgateProcess), a guard that looks the
 *                session up with sessionOf and sets nothing (labgateLookup), the lookup in the
 *                handler, which answers from the session's user (labgateLookupHandler)
 *   --simulate-cache  with --instructions: callgrind also simulates the caches and branch predictors and
 *                the table adds misses per request (what costs time without costing instructions)
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
import { callgrindCommand, countInstructions } from './callgrind.mjs';

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
    candidate: { type: 'string', multiple: true },
    instances: { type: 'string', default: '1' },
    'head-to-head': { type: 'boolean', default: false },
    instructions: { type: 'string' },
    repeats: { type: 'string', default: '3' },
    'instructions-connections': { type: 'string', default: '1' },
    'simulate-cache': { type: 'boolean', default: false },
    dist: { type: 'string' },
    ref: { type: 'string' },
    shape: { type: 'boolean', default: false },
    twin: { type: 'boolean', default: false },
    prime: { type: 'string', default: '0' },
    only: { type: 'string' },
    'shape-async': { type: 'boolean', default: false },
    'shape-loaded': { type: 'boolean', default: false },
    'shape-parts': { type: 'boolean', default: false },
    'labgate-parts': { type: 'boolean', default: false },
    'no-build': { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    check: { type: 'boolean', default: false },
    stores: { type: 'boolean', default: false },
  },
});
const rounds = positiveInt('rounds', args.rounds, 200);
const duration = positiveInt('duration', args.duration, 60);
const connections = positiveInt('connections', args.connections, 1000);
const threads = positiveInt('threads', args.threads, 8);
const instances = positiveInt('instances', args.instances, 5);
if (args.profile && instances > 1) fail('--profile takes one process per contestant (no --instances)');
const warmup = positiveInt('warmup', args.warmup, 30, 0);
const prime = positiveInt('prime', args.prime, 30, 0);
const retries = positiveInt('retries', args.retries, 5, 0);
const maxOtherLoad = Number(args['max-other-load']);
if (!(maxOtherLoad >= 0)) fail('--max-other-load must be a number of cores ≥ 0');
// Each --candidate DIR is one more contestant: keys candidate, candidate2, candidate3, …
const candidates = (args.candidate ?? []).map((dir, i) => ({
  key: i === 0 ? 'candidate' : `candidate${i + 1}`,
  dist: resolvePath(dir),
}));
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

const command = `node bench/me.mjs${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`;
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const perRun = duration + (prime > 0 ? prime + 5 : 0) + 5;
const budget = args.instructions
  ? 3 * 3600_000 // under valgrind: slow, and bounded by request counts rather than by time
  : (instances * (9 * (warmup + 5) + 60) + rounds * 10 * perRun * (1 + retries) + 120) * 1000;
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
/** Bare Express and its A/A twin: no authentication, so no 401 check and no GitLab calls. */
const ANCHORS = ['bare', 'bareTwin'];
const git = (...a) => spawnSync('git', a, { cwd: root, encoding: 'utf8' }).stdout.trim();
// The checkout dist/ stands for, read now: src/ may be edited while the runs go on.
const checkout = {
  head: git('rev-parse', '--short', 'HEAD'),
  dirty: git('status', '--porcelain', '--', 'src').length > 0,
};

tmp = mkdtempSync(join(os.tmpdir(), 'labgate-bench-'));

/** --labgate-parts: the prefix form taken apart (bench/servers/labgate.mjs, BENCH_MOUNT). */
const LABGATE_PARTS = [
  {
    key: 'labgateProcess',
    mount: 'process',
    label: 'a signed-in labgate process, `/me` behind a guard that only checks for a Cookie header',
  },
  {
    key: 'labgateLookup',
    mount: 'lookup',
    label: 'the same, the guard looks the session up (`sessionOf`) and sets nothing',
  },
  {
    key: 'labgateLookupHandler',
    mount: 'lookup-handler',
    label: 'the same, the lookup in the handler, which answers from the session’s user',
  },
];
// --stores: labgate on each store of the persistence issue, and express-session on Redis.
const STORE_CONTESTANTS = [
  {
    key: 'sqlite',
    label: 'labgate/express, prefix form (as `labgatePrefix`), on SQLite',
    target: '≥ 0.90',
    store: () => `sqlite:${join(tmp, 'bench.db')}`,
  },
  {
    key: 'postgres',
    label: 'labgate/express, prefix form (as `labgatePrefix`), on PostgreSQL',
    target: '≥ 0.80',
    store: () => `postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3Dlg_bench`,
  },
  {
    key: 'redis',
    label: 'labgate/express, prefix form (as `labgatePrefix`), on Redis',
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
const callgrindDir = join(here, 'callgrind');
if (args.instructions) {
  rmSync(callgrindDir, { recursive: true, force: true });
  mkdirSync(callgrindDir, { recursive: true });
}

/** Spawns bench/servers/NAME.mjs and waits for its `READY {json}` line. */
function startServer(name, { profile = false, as = name, env = {}, instance = 0 } = {}) {
  const flags = profile
    ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${as}.cpuprofile`]
    : [];
  const script = join(here, 'servers', `${name}.mjs`);
  const processName = instance ? `${as}#${instance + 1}` : as;
  const [command, commandArgs] = args.instructions
    ? // V8's memory reducer collects garbage when a process looks idle by the wall clock, which
      // valgrind's slowdown fakes: off, so the count holds the collections the load itself causes.
      callgrindCommand(callgrindDir, processName, ['--no-memory-reducer', script], args['simulate-cache'])
    : [process.execPath, [...flags, script]];
  const child = spawn(command, commandArgs, {
    cwd: root,
    env: { ...serverEnv, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  // Passed on, except express-session's warning (in production mode) that MemoryStore is for one process.
  // …and valgrind's own lines (==pid== …) under --instructions.
  const known =
    /MemoryStore is not|designed for a production environment|memory, and will not scale|^==\d+==/;
  createInterface({ input: child.stderr }).on('line', (line) => {
    if (!known.test(line)) process.stderr.write(`${as}: ${line}\n`);
  });
  return new Promise((resolve, reject) => {
    const limit = args.instructions ? 300 : 20; // seconds; node under valgrind starts slowly
    const timer = setTimeout(
      () => reject(new Error(`${name} did not start within ${limit} s`)),
      limit * 1000,
    );
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited before it was ready (${code ?? signal})`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.startsWith('READY ')) return;
      clearTimeout(timer);
      // key: the contestant; name: this process (the contestant's first instance, or key#2, key#3, …)
      resolve({
        key: as,
        name: processName,
        child,
        ...JSON.parse(line.slice(6)),
      });
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
/** Each contestant's first process (servers[key]) and all of them (pool[key], --instances of each). */
const servers = {};
const pool = {};
// With --only, the other contestants' servers are not even started.
const onlyKeys = args.only ? new Set(['bare', ...args.only.split(',').map((k) => k.trim())]) : null;
/** Starts a contestant's server unless --only leaves it out (then null). */
function startWanted(name, options = {}) {
  return onlyKeys && !onlyKeys.has(options.as ?? name) ? null : startServer(name, options);
}
/** One process of every contestant. */
async function startInstance(instance) {
  const startServer = startWanted;
  const labgateEnv = labgateDist ? { LABGATE_DIST: labgateDist } : {};
  const started = await Promise.all([
    startServer('bare', { profile: args.profile, instance }),
    ...(args.twin ? [startServer('bare', { as: 'bareTwin', instance })] : []),
    startServer('labgate', { profile: args.profile, env: labgateEnv, instance }),
    startServer('labgate', {
      as: 'labgatePrefix',
      profile: args.profile,
      env: { ...labgateEnv, BENCH_MOUNT: 'prefix' },
      instance,
    }),
    startServer('passport', { instance }),
    startServer('authjs', { instance }),
    ...(args.shape ? [startServer('shape', { profile: args.profile, instance })] : []),
    ...(args['labgate-parts']
      ? LABGATE_PARTS.map(({ key, mount }) =>
          startServer('labgate', { as: key, env: { ...labgateEnv, BENCH_MOUNT: mount }, instance }),
        )
      : []),
    ...(args.stores
      ? [
          ...STORE_CONTESTANTS.map((c) =>
            startServer('labgate', {
              as: c.key,
              env: { LABGATE_STORE: c.store(), BENCH_MOUNT: 'prefix', ...labgateEnv },
              instance,
            }),
          ),
          startServer('passport', {
            as: 'connectRedis',
            env: { SESSION_REDIS_URL: 'redis://127.0.0.1:6379' },
            instance,
          }),
        ]
      : []),
    ...(args['shape-parts']
      ? [
          startServer('shape', { as: 'shapeUse', env: { SHAPE_PARTS: 'use' }, instance }),
          startServer('shape', { as: 'shapeGuard', env: { SHAPE_PARTS: 'guard' }, instance }),
          startServer('shape', { as: 'shapeBare', env: { SHAPE_PARTS: 'bare-guard' }, instance }),
          startServer('shape', { as: 'shapeProperty', env: { SHAPE_PARTS: 'property' }, instance }),
          startServer('shape', { as: 'shapeLocals', env: { SHAPE_PARTS: 'locals' }, instance }),
          startServer('shape', { as: 'shapeWeakMap', env: { SHAPE_PARTS: 'weakmap' }, instance }),
          startServer('shape', { as: 'shapeMounted', env: { SHAPE_PARTS: 'mounted' }, instance }),
          startServer('shape', { as: 'shapeMountedUsed', env: { SHAPE_PARTS: 'mounted' }, instance }),
        ]
      : []),
    ...(args['shape-async']
      ? [startServer('shape', { as: 'shapeAsync', env: { SHAPE_ASYNC: '1' }, instance })]
      : []),
    ...(args['shape-loaded']
      ? [
          startServer('shape', { as: 'shapeLoaded', env: { SHAPE_LOAD: 'labgate' }, instance }),
          startServer('shape', { as: 'shapeImported', env: { SHAPE_LOAD: 'import' }, instance }),
          startServer('shape', { as: 'shapeFetched', env: { SHAPE_LOAD: 'fetch' }, instance }),
        ]
      : []),
    ...candidates.map(({ key, dist }) =>
      startServer('labgate', { as: key, env: { LABGATE_DIST: dist }, profile: args.profile, instance }),
    ),
  ]);
  return started.filter(Boolean);
}
try {
  for (let instance = 0; instance < instances; instance++) {
    for (const server of await startInstance(instance)) {
      pool[server.key] ??= [];
      pool[server.key].push(server);
    }
  }
  for (const [key, list] of Object.entries(pool)) servers[key] = list[0];
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
  const labgateKeys = ['labgate', 'labgatePrefix', ...candidates.map((c) => c.key)];
  if (args['labgate-parts']) labgateKeys.push(...LABGATE_PARTS.map((c) => c.key));
  if (args.stores) labgateKeys.push(...STORE_CONTESTANTS.map((c) => c.key));
  // Every process has its own sessions (a MemoryStore each), so each signs in on its own.
  for (const key of labgateKeys)
    for (const server of pool[key] ?? []) server.cookie = await labgateCookie(server);
  for (const key of ['passport', ...(args.stores ? ['connectRedis'] : [])])
    for (const server of pool[key] ?? []) server.cookie = await passportCookie(server);
  for (const server of pool.authjs ?? []) server.cookie = await authjsCookie(server);
  // A labgate session cookie (or one of the same length when no labgate server runs).
  const labgateLike =
    labgateKeys.map((key) => pool[key]?.[0]?.cookie).find(Boolean) ?? `labgate=${'x'.repeat(120)}`;
  // The anchors get a Cookie header of the same kind (they ignore it), so every server parses one.
  for (const key of [
    'bare',
    'bareTwin',
    'shape',
    'shapeAsync',
    'shapeLoaded',
    'shapeImported',
    'shapeFetched',
    'shapeUse',
    'shapeGuard',
    'shapeBare',
    'shapeProperty',
    'shapeLocals',
    'shapeWeakMap',
    'shapeMounted',
    'shapeMountedUsed',
  ])
    for (const server of pool[key] ?? []) server.cookie = labgateLike;
} catch (error) {
  fail(`getting the session cookies failed: ${error.stack ?? error}`);
}
// shapeMountedUsed: its /auth mount answers the two requests of a sign-in before the load, from here
// as a browser's would come (the server itself makes no request: fetch would load more of Node).
for (const server of pool.shapeMountedUsed ?? [])
  for (const path of ['/auth/login?returnTo=%2Fme', '/auth/callback?code=c&state=s']) {
    const response = await fetch(`${server.origin}${path}`, { redirect: 'manual' });
    if (response.status !== 302 && response.status !== 303)
      fail(`${server.name}: GET ${path} answered ${response.status}, expected a redirect`);
    await response.arrayBuffer();
  }
// GitLab stays up, as in real life: labgate re-checks each session's access every 5 minutes (with
// no access policy, that its token still works), and a GitLab that has gone away would end the
// sessions after the grace period. The bench counts what GitLab receives during the load instead: a
// /me that called GitLab would show up there by the thousand (checked after the load).
emulator.control.clearRequests();
const loadStarted = Date.now();

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
  if (ANCHORS.includes(server.key)) return;
  const anonymous = await fetch(url);
  if (anonymous.status !== 401)
    fail(`${server.name}: GET /me without a session answered ${anonymous.status}, expected 401`);
  await anonymous.arrayBuffer();
}

const build = refCommit ? ` at ${refCommit}` : labgateDist ? `, build in ${relativeTo(labgateDist)}` : '';
const contestants = [
  { key: 'bare', label: 'bare Express (anchor)', target: 'anchor' },
  {
    key: 'labgate',
    label: `labgate/express, \`app.use(labgate(auth))\` + \`requireUser()\` (server sessions, MemoryStore)${build}`,
    target: `≥ ${TARGET.toFixed(2)}`,
  },
  {
    key: 'labgatePrefix',
    label: `labgate/express, \`app.use('/auth', labgate(auth))\` + \`requireUser(auth)\` (server sessions, MemoryStore)${build}`,
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
if (args['labgate-parts'])
  contestants.splice(3, 0, ...LABGATE_PARTS.map(({ key, label }) => ({ key, label, target: '—' })));
if (args['shape-parts']) {
  contestants.splice(
    1,
    0,
    { key: 'shapeUse', label: 'bare Express with only an `app.use` middleware (no auth)', target: '—' },
    {
      key: 'shapeGuard',
      label: 'bare Express with only a route guard before the handler (no auth)',
      target: '—',
    },
    {
      key: 'shapeBare',
      label: 'bare Express with a route guard that sets nothing (no auth)',
      target: '—',
    },
    {
      key: 'shapeProperty',
      label: 'bare Express whose handler adds a property to `req` (no auth)',
      target: '—',
    },
    {
      key: 'shapeWeakMap',
      label: 'bare Express whose handler keeps the user in a WeakMap keyed by `req` (no auth)',
      target: '—',
    },
    {
      key: 'shapeLocals',
      label: 'bare Express whose handler puts the user in `res.locals` (no auth)',
      target: '—',
    },
    {
      key: 'shapeMounted',
      label:
        'the route guard that sets nothing, behind a middleware mounted at `/auth` never called (no auth)',
      target: '—',
    },
    {
      key: 'shapeMountedUsed',
      label: 'the same, after the `/auth` middleware answered the two requests of a sign-in (no auth)',
      target: '—',
    },
  );
}
if (args['shape-loaded']) {
  contestants.splice(
    1,
    0,
    {
      key: 'shapeLoaded',
      label:
        'the shape anchor in a process that loaded labgate (instance made, GitLab discovered; none on /me)',
      target: '—',
    },
    {
      key: 'shapeImported',
      label: 'the shape anchor in a process that only imported labgate (no instance, no request)',
      target: '—',
    },
    {
      key: 'shapeFetched',
      label: 'the shape anchor in a process that only fetched GitLab’s discovery document (no labgate)',
      target: '—',
    },
  );
}
if (args['shape-async']) {
  contestants.splice(1, 0, {
    key: 'shapeAsync',
    label: 'bare Express, same shape, next() after a promise (no auth)',
    target: '—',
  });
}
if (args.twin) {
  contestants.splice(1, 0, {
    key: 'bareTwin',
    label: 'bare Express again, in processes of its own (A/A control)',
    target: '— (1.00 when the method is fair)',
  });
}
if (args.shape) {
  contestants.splice(1, 0, {
    key: 'shape',
    label: 'bare Express with labgate’s app shape (middleware + guard, no auth)',
    target: '—',
  });
}
contestants.splice(
  contestants.findIndex((c) => c.key === 'labgate') + 1,
  0,
  ...candidates.map(({ key, dist }) => ({
    key,
    label: `labgate/express, other build (${relativeTo(dist)})`,
    target: `≥ ${TARGET.toFixed(2)}`,
  })),
);
function relativeTo(path) {
  return path.startsWith(`${root}/`) ? path.slice(root.length + 1) : path;
}
if (onlyKeys) {
  for (const key of onlyKeys)
    if (!contestants.some((c) => c.key === key)) fail(`--only: no contestant ${key}`);
  contestants.splice(0, contestants.length, ...contestants.filter((c) => onlyKeys.has(c.key)));
}
for (const c of contestants) {
  for (const server of pool[c.key]) await verify(server);
  process.stderr.write(`bench: ${c.key.padEnd(10)} GET /me → ${servers[c.key].response}\n`);
}
if (args.instructions) {
  await instructionsReport();
  process.exit(0);
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

function wrk(server, seconds, cpu = null) {
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
    const [command, commandArgs] =
      cpu === null ? ['wrk', wrkArgs] : ['taskset', ['-c', cpu, 'wrk', ...wrkArgs]];
    const child = spawn(command, commandArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
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

const allCpus = `0-${os.availableParallelism() - 1}`;
/** Sets the CPU affinity of every thread of a process (taskset -a). */
function pin(pid, cpus) {
  const done = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { encoding: 'utf8' });
  if (done.status !== 0) fail(`taskset could not pin process ${pid} to CPU ${cpus}: ${done.stderr}`);
}

/**
 * Loads several contestants at once, each with its own wrk, and reads their CPU from /proc. With
 * `pinned`, every server runs on CPU 1 and every wrk on CPU 0 for the time of the run, so the servers
 * share one CPU evenly and each one's req/s is what its work per request allows, whatever the
 * machine's speed is at that moment.
 */
async function measureTogether(entries, seconds, pinned = false) {
  const list = entries.map(({ c, instance }) => ({ c, server: pool[c.key][instance % pool[c.key].length] }));
  if (pinned) for (const { server } of list) pin(server.child.pid, '1');
  try {
    const before = list.map(({ server }) => snapshot(server));
    const results = await Promise.all(
      list.map(({ c, server }) =>
        wrk(server, seconds, pinned ? '0' : null).catch((error) => fail(`${c.key}: ${error.message}`)),
      ),
    );
    const after = list.map(({ server }) => snapshot(server));
    const wallUs = Number(after[0].at - before[0].at) / 1000;
    const serverTicks = list.map((_, i) => after[i].server - before[i].server);
    const otherTicks =
      after[0].machine -
      before[0].machine -
      serverTicks.reduce((a, b) => a + b, 0) -
      (after.at(-1).self - before[0].self);
    return list.map(({ c, server }, i) => {
      const result = results[i];
      result.cpuPerRequestUs = (serverTicks[i] * TICK_US) / result.requests;
      result.serverCores = (serverTicks[i] * TICK_US) / wallUs;
      result.otherLoad = Math.max(0, (otherTicks * TICK_US) / wallUs);
      server.requests = (server.requests ?? 0) + result.requests;
      if (result.non2xx > 0) fail(`${c.key}: ${result.non2xx} responses were not 2xx/3xx:\n${result.raw}`);
      if (result.errors) fail(`${c.key}: socket errors ${result.errors}:\n${result.raw}`);
      return result;
    });
  } finally {
    if (pinned) for (const { server } of list) pin(server.child.pid, allCpus);
  }
}

async function measure(c, seconds, instance = 0) {
  return (await measureTogether([{ c, instance }], seconds))[0];
}

const wrkCommand = `wrk -t${threads} -c${connections} -d${duration}s --timeout 2s --latency -H 'Cookie: <session>' http://127.0.0.1:<port>/me`;
process.stderr.write(`bench: ${wrkCommand}\n`);
if (warmup > 0) {
  process.stderr.write(`bench: warm-up ${warmup} s each\n`);
  for (let instance = 0; instance < instances; instance++)
    for (const c of contestants) await measure(c, warmup, instance);
}

/**
 * One measured run of a contestant (or, head to head, of the anchor and a contestant together),
 * measured again (at most --retries times) while other processes load the machine.
 */
async function run(group, round, instance) {
  const entries = group.map((c) => ({ c, instance }));
  const pinned = group.length > 1;
  let results;
  for (let attempt = 0; attempt <= retries; attempt++) {
    // --prime: the same load just before, not measured, so the run starts on a warm process.
    if (prime > 0) await measureTogether(entries, prime, pinned);
    results = await measureTogether(entries, duration, pinned);
    const otherLoad = results[0].otherLoad;
    for (const [i, result] of results.entries()) {
      const name = pool[group[i].key][instance % pool[group[i].key].length].name;
      process.stderr.write(
        `bench: round ${round}/${rounds} ${name.padEnd(11)} ${result.rps.toFixed(0).padStart(7)} req/s  ` +
          `p50 ${result.p50.padStart(7)}  p99 ${result.p99.padStart(8)}  server ${result.cpuPerRequestUs.toFixed(0)} µs/req ` +
          `(${result.serverCores.toFixed(2)} cores)  other load ${otherLoad.toFixed(2)} cores` +
          `${otherLoad > maxOtherLoad ? (attempt < retries ? ' - noisy, again' : ' - noisy, kept') : ''}\n`,
      );
    }
    if (otherLoad <= maxOtherLoad) break;
  }
  return results;
}

const anchor = contestants.find((c) => c.key === 'bare');
const others = contestants.filter((c) => c !== anchor);
const samples = Object.fromEntries(contestants.map((c) => [c.key, []]));
// Round r uses process r mod --instances of every contestant, so one process's luck (memory
// layout, JIT) does not decide a ratio. The other contestants' order rotates from round to round.
const orderOf = (round) => {
  const shift = (round - 1) % Math.max(1, others.length);
  return [...others.slice(shift), ...others.slice(0, shift)];
};
if (args['head-to-head']) {
  // Each contestant runs at the same time as the anchor, both servers sharing CPU 1 (the wrks on
  // CPU 0): the machine's speed at that moment is the same for both, and cancels in their ratio.
  for (let round = 1; round <= rounds; round++) {
    for (const c of orderOf(round)) {
      const [base, result] = await run([anchor, c], round, (round - 1) % instances);
      result.paired = base;
      samples.bare.push(base);
      samples[c.key].push(result);
    }
  }
} else {
  // The anchor opens every round and closes the last one; the others run one at a time between.
  // Each of their runs is compared with the anchor's value interpolated between the two anchor
  // runs around it (a paired ratio): slow drifts in the speed of a shared machine cancel out
  // instead of landing on whichever contestant ran in a slow minute.
  samples.bare.push((await run([anchor], 1, 0))[0]);
  for (let round = 1; round <= rounds; round++) {
    const order = orderOf(round);
    for (const [index, c] of order.entries()) {
      const [result] = await run([c], round, (round - 1) % instances);
      // Where the run sits between the round's two anchor runs (0 = the opening one, 1 = the closing one).
      result.between = { round, at: (index + 1) / (order.length + 1) };
      samples[c.key].push(result);
    }
    samples.bare.push((await run([anchor], round, round % instances))[0]);
  }
}
// Still the same signed-in users after the load (no session expired or was rotated away).
for (const c of contestants) for (const server of pool[c.key]) await verify(server);
{
  const calls = emulator.control.requests();
  const labgateProcesses = Object.entries(pool)
    .filter(
      ([key]) =>
        ![...ANCHORS, 'passport', 'authjs', 'connectRedis'].includes(key) && !key.startsWith('shape'),
    )
    .reduce((n, [, list]) => n + list.length, 0);
  // One re-check per session and process every 5 minutes, a few requests each, plus the checks above.
  const allowed = labgateProcesses * (Math.ceil((Date.now() - loadStarted) / 300_000) + 1) * 3 + 10;
  const paths = [...new Set(calls.map((c) => c.path))].join(', ') || 'none';
  process.stderr.write(`bench: GitLab received ${calls.length} requests during the load (${paths})\n`);
  if (calls.length > allowed)
    fail(
      `GitLab received ${calls.length} requests during the load (at most ${allowed} re-checks expected): ${paths}`,
    );
}

// ---------------------------------------------------------------------------------------------
// Report

const medians = Object.fromEntries(contestants.map((c) => [c.key, median(samples[c.key].map((r) => r.rps))]));

/**
 * The anchor's value at a run: its own run beside it (head to head), or the value interpolated
 * between the anchor runs that open and close its round.
 */
function anchorAt(run, field) {
  if (run.paired) return run.paired[field];
  const { round, at } = run.between;
  const before = samples.bare[round - 1][field];
  const after = samples.bare[round][field];
  return before + (after - before) * at;
}
/** Per-run paired ratios to the anchor: req/s over the anchor's, and the anchor's CPU/request over this one's. */
function pairedRatios(key, field = 'rps') {
  if (key === 'bare') return samples.bare.map(() => 1);
  return samples[key].map((r) =>
    field === 'rps' ? r.rps / anchorAt(r, 'rps') : anchorAt(r, field) / r[field],
  );
}
const ratio = (key) => median(pairedRatios(key));

/**
 * A distribution-free 95 % confidence interval of a median: the order statistics x(k) and x(n+1-k),
 * k the largest with P(Binomial(n, 1/2) < k) ≤ 2.5 %; null below 6 values (no such k).
 */
function medianInterval(values) {
  const s = [...values].sort((a, b) => a - b);
  const n = s.length;
  let below = 0; // P(Binomial(n, 1/2) ≤ k - 1), built up term by term
  let k = 0;
  let term = 0.5 ** n; // C(n, 0) / 2^n
  for (let i = 0; i < n; i++) {
    if (below + term > 0.025) break;
    below += term;
    k = i + 1;
    term = (term * (n - i)) / (i + 1);
  }
  return k === 0 ? null : [s[k - 1], s[n - k]];
}

const version = (name) => {
  try {
    return JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return '?';
  }
};

const lines = [];
lines.push(`Command: \`${command}\``);
lines.push(
  `Load: \`${wrkCommand}\`, ${rounds} rounds after a ${warmup} s warm-up of each process; ` +
    (prime > 0
      ? `each measured run right after ${prime} s of the same load on the same process, not measured; `
      : '') +
    `${instances} process${instances > 1 ? 'es' : ''} per contestant, round r on process r mod ${instances}. ` +
    (args['head-to-head']
      ? 'Head to head: each contestant runs at the same time as the anchor, both servers on CPU 1 and both wrks on CPU 0; ' +
        'a run’s ratio is to the anchor run beside it (paired), '
      : 'Every round opens and closes with the anchor, the others run between in a rotating order; ' +
        'a run’s ratio is to the anchor interpolated between the two anchor runs around it (paired), ') +
    'the table shows the median of those ratios and its 95 % confidence interval (order statistics).',
);
lines.push('');
lines.push(
  '| contestant | req/s (median) | runs (req/s) | ratio to bare Express (median of paired) | 95 % CI of the ratio | target | server CPU µs/req (median) | ratio by CPU/req (paired) | other load (max, cores) |',
);
lines.push('|---|---:|---|---:|---:|---|---:|---:|---:|');
const cpu = Object.fromEntries(
  contestants.map((c) => [c.key, median(samples[c.key].map((r) => r.cpuPerRequestUs))]),
);
/** ✔ when the whole interval is at or above the target, ✘ when all of it is below, otherwise "not shown". */
function verdictOf(c) {
  const goal = /^≥ ([\d.]+)/.exec(c.target);
  if (!goal) return '';
  const interval = medianInterval(pairedRatios(c.key));
  if (!interval) return ' (not shown: fewer than 6 rounds give no interval)';
  const [low, high] = interval;
  if (low >= Number(goal[1])) return ' ✔';
  if (high < Number(goal[1])) return ' ✘';
  return ' (not shown: the interval holds it)';
}
/**
 * An interval's ends to two decimals, rounded away from its middle (the low end down, the high end
 * up), so a lower end just under a target never shows as the target itself. (The 1e-9 keeps a value
 * such as 0.57, stored as 0.5699…, at 0.57.)
 */
const lowEnd = (x) => (Math.floor(x * 100 + 1e-9) / 100).toFixed(2);
const highEnd = (x) => (Math.ceil(x * 100 - 1e-9) / 100).toFixed(2);
let noisy = 0;
for (const c of contestants) {
  const runs = samples[c.key];
  const interval = c.key === 'bare' ? null : medianInterval(pairedRatios(c.key));
  const other = Math.max(...runs.map((x) => x.otherLoad));
  noisy += runs.filter((x) => x.otherLoad > maxOtherLoad).length;
  lines.push(
    `| ${c.label} | ${medians[c.key].toFixed(0)} | ${runs.map((x) => x.rps.toFixed(0)).join(', ')} | ` +
      `${ratio(c.key).toFixed(2)} | ${interval ? `${lowEnd(interval[0])}–${highEnd(interval[1])}` : '—'} | ` +
      `${c.target}${verdictOf(c)} | ${cpu[c.key].toFixed(0)} | ${median(pairedRatios(c.key, 'cpuPerRequestUs')).toFixed(2)} | ` +
      `${other.toFixed(2)}${other > maxOtherLoad ? ' (noisy)' : ''} |`,
  );
}
if (noisy > 0) {
  lines.push('');
  lines.push(
    `${noisy} of ${rounds * contestants.length + 1} runs had other processes using more than ${maxOtherLoad} cores ` +
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
        ? `build in ${relativeTo(labgateDist)}; checkout at ${checkout.head}`
        : `dist/ of git ${checkout.head}${checkout.dirty ? ' with uncommitted changes in src/' : ''}`
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
(see bench/README.md). Ratios are paired (each run against the anchor runs around it) and come with
a 95 % confidence interval of their median; a target is met (✔) only when the whole interval is at
or above it. "Server CPU µs/req" is the server process's CPU time per answered request (from /proc),
"other load" the CPU other processes of this machine used meanwhile; neither sees what other
machines on the same host take, which moves both req/s and CPU per request on a shared 2-core VM.

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
const profiled = ['bare', 'shape', 'labgate', 'labgatePrefix', ...candidates.map((c) => c.key)]
  .map((k) => servers[k])
  .filter(Boolean);
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
if (args.check && (verdictOf(contestants.find((c) => c.key === 'labgate')) !== ' ✔' || noisy > 0)) {
  process.stderr.write(
    `bench: labgate/express is at ${ratio('labgate').toFixed(2)} of bare Express (target ${TARGET})${noisy ? `; ${noisy} noisy runs` : ''}\n`,
  );
  process.exit(1);
}

/**
 * --instructions N: the servers ran under callgrind; count each one's instructions per request over
 * N requests (--repeats times, after a warm-up of 5 N) and print them as ratios to the anchor.
 */
async function instructionsReport() {
  const requests = positiveInt('instructions', args.instructions, 1_000_000, 100);
  const repeats = positiveInt('repeats', args.repeats, 20);
  // One connection by default: each request then has an event-loop turn of its own, and the count
  // does not depend on how many requests happened to arrive together.
  const concurrency = positiveInt('instructions-connections', args['instructions-connections'], 100);
  const measured = contestants.map((c) => servers[c.key]);
  const counts = await countInstructions({
    servers: measured,
    dir: callgrindDir,
    requests,
    warmup: 5 * requests,
    repeats,
    concurrency,
    log: (line) => process.stderr.write(`bench: ${line}\n`),
  });
  /** The median over the repeats of one event per request (the sum of several events). */
  const per = (key, ...events) =>
    median(counts[servers[key].name].map((repeat) => events.reduce((sum, e) => sum + (repeat[e] ?? 0), 0)));
  const simulated = args['simulate-cache'];
  // With the simulation: first-level instruction-cache misses, last-level misses (reads and writes,
  // code and data: each one a trip to memory) and mispredicted branches (conditional and indirect).
  const missColumns = simulated
    ? [
        ['I1 misses', ['I1mr']],
        ['last-level misses', ['ILmr', 'DLmr', 'DLmw']],
        ['mispredicted branches', ['Bcm', 'Bim']],
      ]
    : [];
  const out = [
    `Command: \`${command}\``,
    `Each server under \`valgrind --tool=callgrind${simulated ? ' --cache-sim=yes --branch-sim=yes' : ''}\`, counting on for ${requests} requests at a time (${concurrency} keep-alive connection${concurrency > 1 ? 's' : ''}), after a warm-up of ${5 * requests} and ${requests} more with instrumentation on; median of ${repeats} repeats${simulated ? '; the misses are per request, with their ratio to bare Express in brackets' : ''}.`,
    '',
    `| contestant | instructions per request (median) | repeats | ratio to bare Express (instructions) |${missColumns.map(([title]) => ` ${title} |`).join('')} target |`,
    `|---|---:|---|---:|${missColumns.map(() => '---:|').join('')}---|`,
    ...contestants.map((c) => {
      const r = per('bare', 'Ir') / per(c.key, 'Ir');
      const goal = /^≥ ([\d.]+)/.exec(c.target);
      const verdict = goal ? (r >= Number(goal[1]) ? ' ✔' : ' ✘') : '';
      const misses = missColumns.map(([, events]) => {
        const n = per(c.key, ...events);
        return ` ${Math.round(n).toLocaleString('en')} (${(n / per('bare', ...events)).toFixed(2)}) |`;
      });
      return `| ${c.label} | ${Math.round(per(c.key, 'Ir')).toLocaleString('en')} | ${counts[
        servers[c.key].name
      ]
        .map((x) => Math.round(x.Ir).toLocaleString('en'))
        .join(', ')} | ${r.toFixed(3)} |${misses.join('')} ${c.target}${verdict} |`;
    }),
  ];
  process.stdout.write(`${out.join('\n')}\n`);
  clearTimeout(watchdog);
  cleanup();
}
