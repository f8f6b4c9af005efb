#!/usr/bin/env node
/**
 * Every host in one run: authenticated `GET /me` through each of labgate's adapters against the same
 * framework bare — Express, Fastify, Hono on @hono/node-server, plain `node:http` (labgate/node) and a
 * Next.js route handler — each labgate contestant reported as ratios to its own bare framework.
 *
 *   node bench/hosts.mjs [--rounds 6] [--duration 2] [--connections 50] [--warmup 2]
 *                        [--instructions 500] [--repeats 3] [--only HOSTS] [--no-build] [--profile]
 *
 * Contestants (bench/servers/, one process each on 127.0.0.1 with a free port, the package's dist/):
 * per host a bare server that answers `/me` with a fixed user and a labgate one that answers it behind
 * the host's `requireUser` with a session signed in through the GitLab emulator (MemoryStore).
 *
 * Two measures, each paired within a host:
 *   - load: wrk (`apt-get install -y wrk`), `wrk -t1 -c50 -d2s --timeout 10s`, one server at a time. Every round
 *     runs, for each host in a rotating order, bare, labgate, bare; a run's ratios are to the mean of
 *     the two bare runs around it: req/s, and server CPU per request read from /proc (which moves much
 *     less than req/s on a shared machine). The table shows the medians and a distribution-free 95 %
 *     interval of the median ratio (from 6 rounds up).
 *   - instructions: every server again under valgrind's callgrind (bench/callgrind.mjs), counting
 *     instructions per request over `--instructions` requests on one keep-alive connection, `--repeats`
 *     times; a repeat's ratio pairs the two servers of a host counted at the same time.
 *
 *   --only HOSTS  comma-separated: express, fastify, hono, node, next; and node-sync (only when named):
 *                 labgate/node with a handler that stays synchronous while the session is cached
 *   --no-build    measure the dist/ that is there instead of running `npm run build` first
 *   --instructions 0  no callgrind phase
 *   --profile     the servers of the load phase run under `node --cpu-prof` (bench/profiles/); prints
 *                 their hottest functions per request (bench/profile-summary.mjs)
 *
 * Every wrk run is bounded by its -d, every callgrind count by its request count and the whole run by
 * a watchdog that stops every process this script started.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { callgrindCommand, countInstructions } from './callgrind.mjs';
import { ALICE } from './servers/common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);
const TARGET = 0.9;

/** Per host: the bare server and the labgate one (scripts under bench/servers/). */
const HOSTS = [
  { key: 'express', label: 'Express', bare: 'bare', labgate: 'labgate' },
  { key: 'fastify', label: 'Fastify', bare: 'hosts/fastify-bare', labgate: 'hosts/fastify-labgate' },
  { key: 'hono', label: 'Hono (@hono/node-server)', bare: 'hosts/hono-bare', labgate: 'hosts/hono-labgate' },
  { key: 'node', label: '`node:http`', bare: 'hosts/node-bare', labgate: 'hosts/node-labgate' },
  { key: 'next', label: 'Next.js route handler', bare: 'hosts/next-bare', labgate: 'hosts/next-labgate' },
  // Only with --only: the node:http handler kept synchronous while the session is cached.
  {
    key: 'node-sync',
    label: '`node:http`, synchronous handler (`routeOf`, `sessionOf`)',
    bare: 'hosts/node-bare',
    labgate: 'hosts/node-labgate-sync',
    optional: true,
  },
];

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '6' },
    duration: { type: 'string', default: '2' },
    connections: { type: 'string', default: '50' },
    warmup: { type: 'string', default: '2' },
    instructions: { type: 'string', default: '500' },
    repeats: { type: 'string', default: '3' },
    only: { type: 'string' },
    'no-build': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
  },
});
const int = (name, max, min = 1) => {
  const n = Number(args[name]);
  if (!Number.isInteger(n) || n < min || n > max) fail(`--${name} must be an integer in [${min}, ${max}]`);
  return n;
};
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
function fail(message) {
  process.stderr.write(`bench: ${message}\n`);
  cleanup();
  process.exit(1);
}
process.once('exit', () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
});
process.once('SIGINT', () => fail('interrupted'));
process.once('SIGTERM', () => fail('terminated'));

const rounds = int('rounds', 50);
const duration = int('duration', 60);
const connections = int('connections', 1000);
const warmup = int('warmup', 30, 0);
const instructions = int('instructions', 100_000, 0);
const repeats = int('repeats', 20);
const only = args.only?.split(',').map((k) => k.trim());
for (const key of only ?? [])
  if (!HOSTS.some((h) => h.key === key))
    fail(`--only: no host ${key} (${HOSTS.map((h) => h.key).join(', ')})`);
const hosts = HOSTS.filter((h) => (only ? only.includes(h.key) : !h.optional));
const command = `node bench/hosts.mjs${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`;

// Load: 3 runs per host and round plus the warm-up; callgrind: node starts slowly under valgrind.
const budget =
  (hosts.length * (rounds * 3 * (duration + 2) + 2 * (warmup + 2)) +
    (instructions ? 1200 + hosts.length * instructions * repeats * 0.2 : 0) +
    300) *
  1000;
const watchdog = setTimeout(() => fail(`the run took longer than ${budget / 1000} s; stopped`), budget);

if (spawnSync('wrk', ['--version']).error) fail('wrk is not installed: apt-get install -y wrk');
if (instructions && spawnSync('valgrind', ['--version']).error)
  fail('valgrind is not installed: apt-get install -y valgrind (or --instructions 0)');
if (!args['no-build']) {
  process.stderr.write('bench: npm run build\n');
  const build = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (build.status !== 0) fail('npm run build failed (pass --no-build to measure the dist/ that is there)');
}
const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], {
  cwd: root,
  encoding: 'utf8',
}).stdout.trim();
tmp = mkdtempSync(join(os.tmpdir(), 'labgate-hosts-'));

// ---------------------------------------------------------------------------------------------
// Next.js: the two apps, written here and built with `next build` (labgate/next from dist/).

const NEXT_FILES = {
  bare: {
    'app/me/route.js': `export const dynamic = 'force-dynamic';
const ALICE = ${JSON.stringify(ALICE)};
export function GET() {
  return Response.json(ALICE);
}
`,
  },
  labgate: {
    // The process's labgate lives on globalThis (bench/servers/hosts/next-labgate.mjs puts it there),
    // as examples/next/lib/labgate.ts keeps it: Next bundles each route on its own.
    'lib/auth.js': `export const auth = () => globalThis[Symbol.for('labgate.bench.next')];\n`,
    'app/auth/[...labgate]/route.js': `import { handlers } from 'labgate/next';
import { auth } from '../../../lib/auth.js';
export const { GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS } = handlers(auth);
`,
    'app/me/route.js': `import { requireUser } from 'labgate/next';
import { auth } from '../../lib/auth.js';
export const dynamic = 'force-dynamic';
export const GET = requireUser(
  auth,
  (_request, { session }) => {
    const { id, username, name, email } = session.user;
    return Response.json({ id, username, name, email });
  },
  { api: true },
);
`,
  },
};
const nextDirs = {};
if (hosts.some((h) => h.key === 'next')) {
  for (const [kind, files] of Object.entries(NEXT_FILES)) {
    const dir = join(tmp, `next-${kind}`);
    // Files outside the app folder (labgate's dist/, through node_modules/labgate) are bundled too.
    files['next.config.mjs'] = `export default { turbopack: { root: '/' }, outputFileTracingRoot: '/' };\n`;
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), text);
    }
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir');
    process.stderr.write(`bench: next build (${kind})\n`);
    const built = spawnSync(process.execPath, [join(root, 'node_modules/next/dist/bin/next'), 'build', dir], {
      cwd: dir,
      env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1', NODE_ENV: 'production' },
      encoding: 'utf8',
      timeout: 300_000,
    });
    if (built.status !== 0) fail(`next build (${kind}) failed:\n${built.stdout}${built.stderr}`);
    nextDirs[kind] = dir;
  }
}

// ---------------------------------------------------------------------------------------------
// The emulator, and a real sign-in with the scripted browser of the tests (as bench/me.mjs does).

const ts = (await import('typescript')).default;
writeFileSync(
  join(tmp, 'browser.mjs'),
  ts.transpileModule(readFileSync(join(root, 'test/emulator/browser.ts'), 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText,
);
const { Browser } = await import(pathToFileURL(join(tmp, 'browser.mjs')).href);
const { startEmulator } = await import('labgate/emulator');
emulator = await startEmulator();
const application = emulator.applications[0];
const serverEnv = {
  ...process.env,
  NODE_ENV: 'production',
  NEXT_TELEMETRY_DISABLED: '1',
  GITLAB_URL: emulator.url,
  GITLAB_CLIENT_ID: application.uid,
  GITLAB_CLIENT_SECRET: application.secret,
  LABGATE_SECRET: randomBytes(32).toString('base64url'),
  BENCH_SERVER_LIFETIME_MS: String(budget + 30_000),
};
const profileDir = join(here, 'profiles');
const callgrindDir = join(tmp, 'callgrind');
mkdirSync(callgrindDir);
if (args.profile) {
  rmSync(profileDir, { recursive: true, force: true });
  mkdirSync(profileDir, { recursive: true });
}

/** Starts one contestant (`under`: 'node', 'profile' or 'callgrind') and waits for its READY line. */
function startServer(host, kind, under) {
  const script = join(here, 'servers', `${host[kind]}.mjs`);
  const name = `${host.key}-${kind}`;
  const [cmd, cmdArgs] =
    under === 'callgrind'
      ? // V8's memory reducer collects garbage when a process looks idle by the wall clock, which
        // valgrind's slowdown fakes: off, so the count holds the collections the load itself causes.
        callgrindCommand(callgrindDir, name, ['--no-memory-reducer', script])
      : [
          process.execPath,
          [
            ...(under === 'profile'
              ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${name}.cpuprofile`]
              : []),
            script,
          ],
        ];
  const child = spawn(cmd, cmdArgs, {
    cwd: root,
    env: { ...serverEnv, ...(host.key === 'next' ? { BENCH_NEXT_DIR: nextDirs[kind] } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  createInterface({ input: child.stderr }).on('line', (line) => {
    if (!/^==\d+==/.test(line)) process.stderr.write(`${name}: ${line}\n`);
  });
  return new Promise((resolve, reject) => {
    const limit = under === 'callgrind' ? 600 : 60;
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
      resolve({ name, kind, child, ...JSON.parse(line.slice(6)) });
    });
  });
}

async function signIn({ name, origin, cookieName }) {
  const browser = new Browser();
  const start = await browser.get(`${origin}/auth/login?returnTo=%2Fme`);
  if (start.status !== 302) throw new Error(`${name}: /auth/login answered ${start.status}`);
  const alice = emulator.users.find((u) => u.username === 'alice');
  const location = await browser.approveToClient({
    url: emulator.url,
    authorizeUrl: start.location,
    login: alice.username,
    password: alice.password,
  });
  const callback = await browser.get(location);
  if (callback.status !== 303) throw new Error(`${name}: /auth/callback answered ${callback.status}`);
  const cookie = browser.jar.cookies(new URL(origin).hostname).find((c) => c.name === cookieName);
  if (!cookie) throw new Error(`${name}: no session cookie after the sign-in`);
  return `${cookie.name}=${cookie.value}`;
}

/** 200 with Alice's JSON with the cookie; 401 without (labgate's servers). */
async function verify(server) {
  const signedIn = await fetch(`${server.origin}/me`, { headers: { cookie: server.cookie } });
  const body = await signedIn.text();
  if (signedIn.status !== 200 || body !== JSON.stringify(ALICE))
    throw new Error(`${server.name}: GET /me answered ${signedIn.status} ${body.slice(0, 300)}`);
  if (server.kind === 'bare') return;
  const anonymous = await fetch(`${server.origin}/me`);
  await anonymous.arrayBuffer();
  if (anonymous.status !== 401)
    throw new Error(`${server.name}: GET /me without a session answered ${anonymous.status}, expected 401`);
}

/** Every contestant of every host, signed in and checked. */
async function startAll(under) {
  const servers = {};
  for (const host of hosts) {
    const [bare, labgate] = await Promise.all([
      startServer(host, 'bare', under),
      startServer(host, 'labgate', under),
    ]);
    labgate.cookie = await signIn(labgate);
    // The bare server gets a Cookie header of the same kind (it ignores it), so both parse one.
    bare.cookie = labgate.cookie;
    await verify(bare);
    await verify(labgate);
    servers[host.key] = { bare, labgate };
    process.stderr.write(`bench: ${host.key} started${under === 'callgrind' ? ' under callgrind' : ''}\n`);
  }
  return servers;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * A distribution-free 95 % confidence interval of a median (order statistics x(k), x(n+1-k), k the
 * largest with P(Binomial(n, 1/2) < k) ≤ 2.5 %), as bench/me.mjs forms it; null below 6 values.
 */
function medianInterval(values) {
  const s = [...values].sort((a, b) => a - b);
  const n = s.length;
  let below = 0;
  let k = 0;
  let term = 0.5 ** n;
  for (let i = 0; i < n; i++) {
    if (below + term > 0.025) break;
    below += term;
    k = i + 1;
    term = (term * (n - i)) / (i + 1);
  }
  return k === 0 ? null : [s[k - 1], s[n - k]];
}

// ---------------------------------------------------------------------------------------------
// Load, and where the CPU went (/proc, in clock ticks)

const TICK_US = 1e6 / (Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100);
/** User + system ticks of a process (fields 14 and 15 of proc(5)'s stat). */
function processTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}
/** Busy ticks of the whole machine. */
function machineBusy() {
  const [user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8')
    .split('\n', 1)[0]
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  return user + nice + system + irq + softirq + steal;
}

/** One wrk run against a server: req/s, server CPU µs per request, and the rest of the machine's load. */
function wrk(server, seconds, { warmingUp = false } = {}) {
  const wrkArgs = [
    '-t1',
    `-c${connections}`,
    `-d${seconds}s`,
    '--timeout',
    '10s',
    '-H',
    `Cookie: ${server.cookie}`,
    `${server.origin}/me`,
  ];
  return new Promise((resolve, reject) => {
    const startedAt = process.hrtime.bigint();
    const serverBefore = processTicks(server.child.pid);
    const machineBefore = machineBusy();
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
      const serverTicks = processTicks(server.child.pid) - serverBefore;
      const wallUs = Number(process.hrtime.bigint() - startedAt) / 1000;
      // Roughly: wrk itself takes up to one core, the rest is other processes.
      const otherTicks = machineBusy() - machineBefore - serverTicks;
      if (code !== 0) return reject(new Error(`${server.name}: wrk exited with ${code}:\n${out}`));
      const problem = /Non-2xx or 3xx responses:\s+\d+|Socket errors:[^\n]*/.exec(out);
      // A cold server (Next's first requests) may time out while warming up; measured runs may not.
      if (problem && !warmingUp) return reject(new Error(`${server.name}: ${problem[0]}`));
      const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
      if (!(requests > 0) || !Number.isFinite(rps))
        return reject(new Error(`${server.name}: no result:\n${out}`));
      server.requests = (server.requests ?? 0) + requests;
      resolve({
        rps,
        cpuUs: (serverTicks * TICK_US) / requests,
        otherCores: (otherTicks * TICK_US) / wallUs,
      });
    });
  });
}

const results = {};
const lines = [];
const clockStart = Date.now();
try {
  const servers = await startAll(args.profile ? 'profile' : 'node');
  emulator.control.clearRequests();
  if (warmup > 0)
    for (const host of hosts)
      for (const kind of ['bare', 'labgate']) await wrk(servers[host.key][kind], warmup, { warmingUp: true });
  const samples = Object.fromEntries(hosts.map((h) => [h.key, []]));
  for (let round = 0; round < rounds; round++) {
    const order = hosts.map((_, i) => hosts[(i + round) % hosts.length]);
    for (const host of order) {
      const { bare, labgate } = servers[host.key];
      const before = await wrk(bare, duration);
      const run = await wrk(labgate, duration);
      const after = await wrk(bare, duration);
      const bareRps = (before.rps + after.rps) / 2;
      const bareCpu = (before.cpuUs + after.cpuUs) / 2;
      samples[host.key].push({
        bareRps,
        bareCpu,
        rps: run.rps,
        cpuUs: run.cpuUs,
        ratio: run.rps / bareRps,
        cpuRatio: bareCpu / run.cpuUs,
        otherCores: Math.max(before.otherCores, run.otherCores, after.otherCores),
      });
      process.stderr.write(
        `bench: round ${round + 1}/${rounds} ${host.key.padEnd(8)} bare ${bareRps.toFixed(0)} req/s ${bareCpu.toFixed(1)} µs/req, ` +
          `labgate ${run.rps.toFixed(0)} req/s ${run.cpuUs.toFixed(1)} µs/req\n`,
      );
    }
  }
  // Still the same signed-in users, and GitLab was not asked for each request.
  for (const host of hosts) for (const kind of ['bare', 'labgate']) await verify(servers[host.key][kind]);
  const gitlabCalls = emulator.control.requests().length;
  const allowed = hosts.length * (Math.ceil((Date.now() - clockStart) / 300_000) + 1) * 3 + 10;
  if (gitlabCalls > allowed)
    fail(`GitLab received ${gitlabCalls} requests during the load (at most ${allowed})`);
  for (const host of hosts) results[host.key] = { load: samples[host.key] };
  if (args.profile) {
    const profiled = hosts.flatMap((h) => [servers[h.key].bare, servers[h.key].labgate]);
    for (const { child } of profiled) child.kill('SIGTERM');
    await Promise.all(
      profiled.map(
        ({ child }) => new Promise((done) => (child.exitCode !== null ? done() : child.once('exit', done))),
      ),
    );
    for (const { name, requests } of profiled) {
      const summary = spawnSync(
        process.execPath,
        [
          join(here, 'profile-summary.mjs'),
          join(profileDir, `${name}.cpuprofile`),
          '--requests',
          String(requests),
        ],
        { encoding: 'utf8' },
      );
      lines.push(
        `CPU profile of ${name} (bench/profiles/${name}.cpuprofile):`,
        '```',
        summary.stdout + summary.stderr,
        '```',
        '',
      );
    }
  }
  for (const { bare, labgate } of Object.values(servers)) {
    bare.child.kill('SIGTERM');
    labgate.child.kill('SIGTERM');
  }

  if (instructions) {
    const counted = await startAll('callgrind');
    const list = hosts.flatMap((h) => [counted[h.key].bare, counted[h.key].labgate]);
    const counts = await countInstructions({
      servers: list,
      dir: callgrindDir,
      requests: instructions,
      warmup: 5 * instructions,
      repeats,
      concurrency: 1,
      log: (line) => process.stderr.write(`bench: ${line}\n`),
    });
    for (const host of hosts) {
      const bare = counts[`${host.key}-bare`].map((r) => r.Ir);
      const labgate = counts[`${host.key}-labgate`].map((r) => r.Ir);
      results[host.key].instructions = {
        bare: median(bare),
        labgate: median(labgate),
        // The two servers of a host count the same stretch of time: a repeat's ratio pairs them.
        ratio: median(bare.map((b, i) => b / labgate[i])),
        repeats: labgate.map(
          (l, i) => `${Math.round(bare[i]).toLocaleString('en')}/${Math.round(l).toLocaleString('en')}`,
        ),
      };
    }
  }
} catch (error) {
  fail(error.stack ?? String(error));
}
clearTimeout(watchdog);
cleanup();

// ---------------------------------------------------------------------------------------------
// Report

const low = (x) => (Math.floor(x * 100 + 1e-9) / 100).toFixed(2);
const high = (x) => (Math.ceil(x * 100 - 1e-9) / 100).toFixed(2);
const interval = (xs) => {
  const i = medianInterval(xs);
  return i ? `${low(i[0])}–${high(i[1])}` : '—';
};
const verdict = (r) => (r >= TARGET ? '✔' : '✘');
const table = [
  `Command: \`${command}\``,
  `Load: \`wrk -t1 -c${connections} -d${duration}s --timeout 10s -H 'Cookie: <session>' http://127.0.0.1:<port>/me\`, ${rounds} rounds after a ${warmup} s warm-up of each server; per round and host (hosts in a rotating order) bare, labgate, bare, the labgate run paired with the mean of the two bare runs around it.` +
    (instructions
      ? ` Instructions: each server under \`valgrind --tool=callgrind\`, ${instructions} requests per count over one keep-alive connection after ${5 * instructions} of warm-up, median of ${repeats} repeats (the two servers of a host counted side by side, each repeat's ratio paired).`
      : ''),
  '',
  '| host | bare req/s | labgate req/s | ratio by req/s (95 % CI) | bare CPU µs/req | labgate CPU µs/req | difference µs/req | ratio by CPU/req (95 % CI) | bare instructions/req | labgate instructions/req | ratio by instructions | target ≥ 0.90 (CPU, instructions) |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
];
for (const host of hosts) {
  const load = results[host.key].load;
  const ins = results[host.key].instructions;
  const rpsRatio = median(load.map((s) => s.ratio));
  const cpuRatio = median(load.map((s) => s.cpuRatio));
  const bareCpu = median(load.map((s) => s.bareCpu));
  const labgateCpu = median(load.map((s) => s.cpuUs));
  table.push(
    `| ${host.label} | ${median(load.map((s) => s.bareRps)).toFixed(0)} | ${median(load.map((s) => s.rps)).toFixed(0)} | ` +
      `${rpsRatio.toFixed(2)} (${interval(load.map((s) => s.ratio))}) | ${bareCpu.toFixed(1)} | ${labgateCpu.toFixed(1)} | ` +
      `${median(load.map((s) => s.cpuUs - s.bareCpu)).toFixed(1)} | ${cpuRatio.toFixed(2)} (${interval(load.map((s) => s.cpuRatio))}) | ` +
      (ins
        ? `${Math.round(ins.bare).toLocaleString('en')} | ${Math.round(ins.labgate).toLocaleString('en')} | ${ins.ratio.toFixed(3)} | `
        : '— | — | — | ') +
      `${verdict(cpuRatio)}${ins ? ` ${verdict(ins.ratio)}` : ''} |`,
  );
}
const maxOther = Math.max(...hosts.flatMap((h) => results[h.key].load.map((s) => s.otherCores)));
table.push(
  '',
  `Other load (the rest of the machine during a pair's runs, wrk included): at most ${maxOther.toFixed(2)} cores.` +
    (instructions
      ? ` Instruction counts per repeat (bare/labgate): ${hosts.map((h) => `${h.key} ${results[h.key].instructions.repeats.join(', ')}`).join('; ')}.`
      : ''),
  `Machine: ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}; dist/ of git ${head}; ${new Date().toISOString()}.`,
);
process.stdout.write(`${[...table, '', ...lines].join('\n')}\n`);
