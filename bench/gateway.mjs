#!/usr/bin/env node
/**
 * labgate's gateway against a bare Node reverse proxy, and Apache httpd + mod_auth_openidc against plain
 * Apache mod_proxy, in one run: an authenticated proxied `GET /me` of a small answer (about 300 bytes)
 * from one echo upstream, each auth proxy reported as ratios to its own proxy without auth.
 *
 *   node bench/gateway.mjs [--rounds 6] [--duration 3] [--connections 50] [--warmup 2]
 *                          [--instructions 1000] [--repeats 3] [--no-build] [--profile]
 *
 * Every server is its own process on 127.0.0.1 with a free port:
 *   - upstream: bench/servers/gateway/echo.mjs, a plain `node:http` server (all four proxy to it);
 *   - gateway: labgate's `startGateway` from dist/ (bench/servers/gateway/labgate.mjs), MemoryStore,
 *     Alice signed in once through the GitLab emulator with the scripted browser of the tests
 *     (test/emulator/browser.ts), her session cookie reused by the load generator;
 *   - node-proxy: `node:http` + `http.request` over a keep-alive `http.Agent`
 *     (bench/servers/gateway/node-proxy.mjs): the gateway's anchor;
 *   - apache-oidc: Debian's Apache (event MPM, `apache2 -X`: one process) with mod_auth_openidc on
 *     `/` (the emulator's discovery URL, its first application), `ProxyPass` to the upstream
 *     (bench/apache.mjs), signed in by the same scripted browser against the emulator;
 *   - apache: the same Apache with `mod_proxy` only: mod_auth_openidc's anchor.
 * Every proxy gets the same Cookie header; the two without auth ignore it (and pass it on).
 *
 * Two measures, each paired within a pair, as bench/hosts.mjs takes them:
 *   - load: wrk (`apt-get install -y wrk`), `wrk -t1 -c50 -d3s --timeout 10s --latency`, one server at
 *     a time. Every round runs, for each pair in a rotating order, anchor, auth proxy, anchor; a run's
 *     ratios are to the mean of the two anchor runs around it: req/s, the proxy's CPU per request read
 *     from /proc, and the p99 latency it adds. The table shows medians and a distribution-free 95 %
 *     interval of the median ratio (from 6 rounds up).
 *   - instructions: every proxy again under valgrind's callgrind (bench/callgrind.mjs; Apache as
 *     `valgrind --tool=callgrind apache2 -X`), instructions per request over `--instructions` requests
 *     on one keep-alive connection after ten times that of warm-up, `--repeats` times; a repeat's
 *     ratio pairs the two proxies of a pair counted at the same time. The upstream runs outside
 *     callgrind: only the proxy is counted.
 *
 *   --no-build    measure the dist/ that is there instead of running `npm run build` first
 *   --instructions 0  no callgrind phase
 *   --profile     the two Node proxies of the load phase run under `node --cpu-prof` (bench/profiles/);
 *                 prints their hottest functions per request (bench/profile-summary.mjs)
 *
 * Targets: the gateway at ≥ 0.85 of the bare Node proxy by CPU per request (and instructions), adding
 * at most 1 ms to p99 at 50 connections; mod_auth_openidc against plain Apache is the reference (0.65).
 * Every wrk run is bounded by its -d, every callgrind count by its request count, and the whole run
 * by a watchdog that stops every process this script started.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { apacheIdentity, apacheMissing, apacheServer } from './apache.mjs';
import { callgrindCommand, countInstructions } from './callgrind.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = dirname(here);
const TARGET = 0.85;
const P99_BUDGET_MS = 1;
const REFERENCE = 0.65;
// Node's JIT finishes later under valgrind (its compiler threads run one at a time with the rest):
// counts kept falling through 4,000 requests, so the warm-up is longer than bench/hosts.mjs's 5 times.
const WARMUP_FACTOR = 10;

/** The servers: a Node script under bench/servers/gateway/, or Apache (`oidc`: behind mod_auth_openidc). */
const SERVERS = {
  'node-proxy': { script: 'node-proxy' },
  gateway: { script: 'labgate', auth: true },
  apache: { apache: true },
  'apache-oidc': { apache: true, oidc: true, auth: true },
};
/** Each auth proxy against its anchor. */
const PAIRS = [
  {
    key: 'gateway',
    label: 'labgate gateway / bare Node proxy',
    anchor: 'node-proxy',
    contestant: 'gateway',
    target: true,
  },
  {
    key: 'apache',
    label: 'Apache + mod_auth_openidc / Apache mod_proxy',
    anchor: 'apache',
    contestant: 'apache-oidc',
    target: false,
  },
];

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '6' },
    duration: { type: 'string', default: '3' },
    connections: { type: 'string', default: '50' },
    warmup: { type: 'string', default: '2' },
    instructions: { type: 'string', default: '1000' },
    repeats: { type: 'string', default: '3' },
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
const command = `node bench/gateway.mjs${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`;

// Load: 3 runs per pair and round plus the warm-up; callgrind: node and Apache start slowly under valgrind.
const budget =
  (PAIRS.length * (rounds * 3 * (duration + 2) + 2 * (warmup + 2)) +
    (instructions ? 1200 + PAIRS.length * 2 * instructions * repeats * 0.1 : 0) +
    300) *
  1000;
const watchdog = setTimeout(() => fail(`the run took longer than ${budget / 1000} s; stopped`), budget);

if (spawnSync('wrk', ['--version']).error) fail('wrk is not installed: apt-get install -y wrk');
if (instructions && spawnSync('valgrind', ['--version']).error)
  fail('valgrind is not installed: apt-get install -y valgrind (or --instructions 0)');
const missing = apacheMissing(true);
if (missing) fail(missing);
if (!args['no-build']) {
  process.stderr.write('bench: npm run build\n');
  const build = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (build.status !== 0) fail('npm run build failed (pass --no-build to measure the dist/ that is there)');
}
const distBuilt = statSync(join(root, 'dist/gateway/server.js')).mtime;
const head = spawnSync('git', ['log', '-1', '--format=%h', `--before=${distBuilt.toISOString()}`], {
  cwd: root,
  encoding: 'utf8',
}).stdout.trim();
tmp = mkdtempSync(join(os.tmpdir(), 'labgate-gateway-'));
// Apache runs as www-data when this runs as root (bench/apache.mjs): its runtime files and dumps are its.
chmodSync(tmp, 0o777);

// ---------------------------------------------------------------------------------------------
// The emulator, and a real sign-in with the scripted browser of the tests (as bench/hosts.mjs does).

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
  GITLAB_URL: emulator.url,
  GITLAB_CLIENT_ID: application.uid,
  GITLAB_CLIENT_SECRET: application.secret,
  LABGATE_SECRET: randomBytes(32).toString('base64url'),
  BENCH_SERVER_LIFETIME_MS: String(budget + 30_000),
};
const profileDir = join(here, 'profiles');
const callgrindDir = join(tmp, 'callgrind');
mkdirSync(callgrindDir);
chmodSync(callgrindDir, 0o777);
if (args.profile) {
  rmSync(profileDir, { recursive: true, force: true });
  mkdirSync(profileDir, { recursive: true });
}

// callgrind_control (bench/callgrind.mjs) drives a valgrind process through vgdb, which can talk only to
// a process of its own user: as root, a wrapper first on PATH runs it as the user of the process it is
// given (Apache's www-data). Bounded in time either way: a control that cannot get through would
// otherwise block this script, its watchdog included.
if (instructions) {
  const real = spawnSync('sh', ['-c', 'command -v callgrind_control'], { encoding: 'utf8' }).stdout.trim();
  if (!real) fail('callgrind_control is not installed: apt-get install -y valgrind');
  const bin = join(tmp, 'bin');
  mkdirSync(bin);
  writeFileSync(
    join(bin, 'callgrind_control'),
    `#!/bin/sh
eval "pid=\\\${$#}"
owner=$(stat -c %u "/proc/$pid" 2>/dev/null || echo 0)
if [ "$(id -u)" = 0 ] && [ "$owner" != 0 ]; then
  exec timeout 300 setpriv --reuid="$owner" --regid="$(stat -c %g "/proc/$pid")" --clear-groups ${real} "$@"
fi
exec timeout 300 ${real} "$@"
`,
    { mode: 0o755 },
  );
  process.env.PATH = `${bin}:${process.env.PATH}`;
}

/** A free loopback port, for Apache, whose configuration names its port (and its redirect URI). */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts connections on the port (Apache prints no ready line). */
async function accepting(port, child, name, limitMs) {
  const until = Date.now() + limitMs;
  while (Date.now() < until) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${name} exited before it was ready (${child.exitCode ?? child.signalCode})`);
    const open = await new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${name} did not accept connections within ${limitMs / 1000} s`);
}

function pipeStderr(child, name) {
  createInterface({ input: child.stderr }).on('line', (line) => {
    // Valgrind's banner, and mod_auth_openidc's warnings that the loopback URLs are not https.
    if (/^==\d+==/.test(line) || /SHOULD be "https"/.test(line)) return;
    process.stderr.write(`${name}: ${line}\n`);
  });
}

/** Starts one server (`under`: 'node', 'profile' or 'callgrind') and waits until it is ready. */
async function startServer(name, under, upstream) {
  const spec = SERVERS[name] ?? { script: name };
  const limit = (under === 'callgrind' ? 600 : 60) * 1000;
  if (spec.apache) {
    const port = await freePort();
    const {
      command: [cmd, cmdArgs],
      log,
    } = apacheServer({
      dir: tmp,
      name: `${name}-${under}`,
      port,
      upstream,
      oidc: spec.oidc
        ? {
            discoveryUrl: `${emulator.url}/.well-known/openid-configuration`,
            clientId: application.uid,
            clientSecret: application.secret,
            passphrase: randomBytes(24).toString('base64url'),
          }
        : null,
    });
    const [run, runArgs] =
      under === 'callgrind'
        ? [
            'valgrind',
            [
              '--tool=callgrind',
              '--instr-atstart=no',
              `--callgrind-out-file=${join(callgrindDir, `${name}.%p.out`)}`,
              cmd,
              ...cmdArgs,
            ],
          ]
        : [cmd, cmdArgs];
    const child = spawn(run, runArgs, { cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'], ...apacheIdentity() });
    children.add(child);
    pipeStderr(child, name);
    try {
      await accepting(port, child, name, limit);
    } catch (error) {
      let text = '';
      try {
        text = readFileSync(log, 'utf8');
      } catch {}
      throw new Error(`${error.message}; its error log:\n${text}`);
    }
    return {
      name,
      child,
      origin: `http://127.0.0.1:${port}`,
      cookieName: 'mod_auth_openidc_session',
      ...spec,
    };
  }
  const script = join(here, 'servers', 'gateway', `${spec.script}.mjs`);
  const [cmd, cmdArgs] =
    under === 'callgrind'
      ? // V8's memory reducer collects garbage when a process looks idle by the wall clock, which
        // valgrind's slowdown fakes: off, so the count holds the collections the load itself causes.
        callgrindCommand(callgrindDir, name, ['--no-memory-reducer', script])
      : [
          process.execPath,
          [
            ...(under === 'profile' && name !== 'echo'
              ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${name}.cpuprofile`]
              : []),
            script,
          ],
        ];
  const child = spawn(cmd, cmdArgs, {
    cwd: root,
    env: { ...serverEnv, ...(upstream ? { BENCH_UPSTREAM: upstream } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  pipeStderr(child, name);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${name} did not start within ${limit / 1000} s`)),
      limit,
    );
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited before it was ready (${code ?? signal})`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (!line.startsWith('READY ')) return;
      clearTimeout(timer);
      resolve({ name, child, ...spec, ...JSON.parse(line.slice(6)) });
    });
  });
}

/**
 * Signs Alice in as a browser does: the proxy's sign-in start (the gateway's `/oauth2/start`; for
 * mod_auth_openidc, `/me` itself, which redirects), GitLab's sign-in and consent, the callback.
 */
async function signIn(server) {
  const browser = new Browser();
  const start = await browser.get(
    server.apache ? `${server.origin}/me` : `${server.origin}/oauth2/start?rd=%2Fme`,
  );
  if (start.status !== 302 || !start.location?.startsWith(`${emulator.url}/`))
    throw new Error(`${server.name}: the sign-in start answered ${start.status} ${start.location ?? ''}`);
  const alice = emulator.users.find((u) => u.username === 'alice');
  const location = await browser.approveToClient({
    url: emulator.url,
    authorizeUrl: start.location,
    login: alice.username,
    password: alice.password,
  });
  const callback = await browser.get(location);
  if (callback.status !== 302 && callback.status !== 303)
    throw new Error(
      `${server.name}: the callback answered ${callback.status} ${callback.body.slice(0, 300)}`,
    );
  const cookie = browser.jar
    .cookies(new URL(server.origin).hostname)
    .find((c) => c.name === server.cookieName);
  if (!cookie) throw new Error(`${server.name}: no session cookie after the sign-in`);
  return `${cookie.name}=${cookie.value}`;
}

/**
 * 200 with the upstream's answer to `GET /me` with the cookie (Alice's name passed on by the auth
 * proxies); the auth proxies refuse the request without it, and the upstream never sees it.
 */
async function verify(server) {
  const signedIn = await fetch(`${server.origin}/me`, { headers: { cookie: server.cookie } });
  const text = await signedIn.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {}
  if (signedIn.status !== 200 || body?.url !== '/me' || body.user !== (server.auth ? 'alice' : null))
    throw new Error(`${server.name}: GET /me answered ${signedIn.status} ${text.slice(0, 300)}`);
  if (!server.auth) return;
  const anonymous = await fetch(`${server.origin}/me`, { redirect: 'manual' });
  const refused = await anonymous.text();
  if (anonymous.status === 200 || refused.includes('"url":"/me"'))
    throw new Error(`${server.name}: GET /me without a session answered ${anonymous.status}`);
}

/** The upstream, then every proxy in front of it, signed in and checked. */
async function startAll(under) {
  const echo = await startServer('echo', 'node');
  const servers = { echo };
  for (const pair of PAIRS) {
    const [anchor, contestant] = await Promise.all([
      startServer(pair.anchor, under, echo.origin),
      startServer(pair.contestant, under, echo.origin),
    ]);
    contestant.cookie = await signIn(contestant);
    anchor.cookie = contestant.cookie;
    await verify(anchor);
    await verify(contestant);
    servers[pair.anchor] = anchor;
    servers[pair.contestant] = contestant;
    process.stderr.write(`bench: ${pair.key} started${under === 'callgrind' ? ' under callgrind' : ''}\n`);
  }
  return servers;
}

async function stopAll(servers) {
  const list = Object.values(servers);
  for (const { child } of list) child.kill('SIGTERM');
  await Promise.all(
    list.map(
      ({ child }) =>
        new Promise((done) =>
          child.exitCode !== null || child.signalCode !== null ? done() : child.once('exit', done),
        ),
    ),
  );
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
/** User and system ticks of a process, all its threads (fields 14 and 15 of proc(5)'s stat). */
function processTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[11]), system: Number(f[12]) };
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
/** wrk's latency value (`812.00us`, `1.23ms`, `2.00s`) in ms. */
function latencyMs(text) {
  const [, value, unit] = /^([\d.]+)(us|ms|s|m)$/.exec(text) ?? [];
  const scale = { us: 1e-3, ms: 1, s: 1e3, m: 6e4 }[unit];
  return scale ? Number(value) * scale : Number.NaN;
}

/** One wrk run: req/s, the proxy's CPU µs per request, p99 latency, and the rest of the machine's load. */
function wrk(server, seconds, { warmingUp = false } = {}) {
  const wrkArgs = [
    '-t1',
    `-c${connections}`,
    `-d${seconds}s`,
    '--timeout',
    '10s',
    '--latency',
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
      const serverAfter = processTicks(server.child.pid);
      const systemTicks = serverAfter.system - serverBefore.system;
      const serverTicks = serverAfter.user - serverBefore.user + systemTicks;
      const wallUs = Number(process.hrtime.bigint() - startedAt) / 1000;
      // Roughly: wrk itself takes up to one core, the upstream some, the rest is other processes.
      const otherTicks = machineBusy() - machineBefore - serverTicks;
      if (code !== 0) return reject(new Error(`${server.name}: wrk exited with ${code}:\n${out}`));
      const problem = /Non-2xx or 3xx responses:\s+\d+|Socket errors:[^\n]*/.exec(out);
      if (problem && !warmingUp) return reject(new Error(`${server.name}: ${problem[0]}`));
      const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
      const p99 = latencyMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? '');
      if (!(requests > 0) || !Number.isFinite(rps) || !Number.isFinite(p99))
        return reject(new Error(`${server.name}: no result:\n${out}`));
      server.requests = (server.requests ?? 0) + requests;
      resolve({
        rps,
        p99,
        cpuUs: (serverTicks * TICK_US) / requests,
        systemUs: (systemTicks * TICK_US) / requests,
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
    for (const pair of PAIRS)
      for (const name of [pair.anchor, pair.contestant])
        await wrk(servers[name], warmup, { warmingUp: true });
  const samples = Object.fromEntries(PAIRS.map((p) => [p.key, []]));
  for (let round = 0; round < rounds; round++) {
    const order = PAIRS.map((_, i) => PAIRS[(i + round) % PAIRS.length]);
    for (const pair of order) {
      const anchor = servers[pair.anchor];
      const before = await wrk(anchor, duration);
      const run = await wrk(servers[pair.contestant], duration);
      const after = await wrk(anchor, duration);
      const anchorRps = (before.rps + after.rps) / 2;
      const anchorCpu = (before.cpuUs + after.cpuUs) / 2;
      const anchorSystem = (before.systemUs + after.systemUs) / 2;
      const anchorP99 = (before.p99 + after.p99) / 2;
      samples[pair.key].push({
        anchorRps,
        anchorCpu,
        anchorP99,
        rps: run.rps,
        cpuUs: run.cpuUs,
        p99: run.p99,
        ratio: run.rps / anchorRps,
        cpuRatio: anchorCpu / run.cpuUs,
        addedP99: run.p99 - anchorP99,
        anchorSystem,
        systemUs: run.systemUs,
        otherCores: Math.max(before.otherCores, run.otherCores, after.otherCores),
      });
      process.stderr.write(
        `bench: round ${round + 1}/${rounds} ${pair.key.padEnd(8)} ${pair.anchor} ${anchorRps.toFixed(0)} req/s ` +
          `${anchorCpu.toFixed(1)} µs/req p99 ${anchorP99.toFixed(2)} ms, ${pair.contestant} ${run.rps.toFixed(0)} req/s ` +
          `${run.cpuUs.toFixed(1)} µs/req p99 ${run.p99.toFixed(2)} ms\n`,
      );
    }
  }
  // Still the same signed-in user, and GitLab was not asked for each request.
  for (const pair of PAIRS) for (const name of [pair.anchor, pair.contestant]) await verify(servers[name]);
  const gitlabCalls = emulator.control.requests().length;
  const allowed = PAIRS.length * (Math.ceil((Date.now() - clockStart) / 300_000) + 1) * 3 + 10;
  if (gitlabCalls > allowed)
    fail(`GitLab received ${gitlabCalls} requests during the load (at most ${allowed})`);
  for (const pair of PAIRS) results[pair.key] = { load: samples[pair.key] };
  await stopAll(servers);
  if (args.profile) {
    for (const name of ['node-proxy', 'gateway']) {
      const summary = spawnSync(
        process.execPath,
        [
          join(here, 'profile-summary.mjs'),
          join(profileDir, `${name}.cpuprofile`),
          '--requests',
          String(servers[name].requests),
          '--focus',
          '(^|/)dist/(core|adapters|gateway)/',
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

  if (instructions) {
    const counted = await startAll('callgrind');
    const list = PAIRS.flatMap((p) => [counted[p.anchor], counted[p.contestant]]);
    const counts = await countInstructions({
      servers: list,
      dir: callgrindDir,
      requests: instructions,
      warmup: WARMUP_FACTOR * instructions,
      repeats,
      concurrency: 1,
      log: (line) => process.stderr.write(`bench: ${line}\n`),
    });
    for (const pair of PAIRS) {
      const anchor = counts[pair.anchor].map((r) => r.Ir);
      const contestant = counts[pair.contestant].map((r) => r.Ir);
      results[pair.key].instructions = {
        anchor: median(anchor),
        contestant: median(contestant),
        // The two proxies of a pair count the same stretch of time: a repeat's ratio pairs them.
        ratio: median(anchor.map((a, i) => a / contestant[i])),
        repeats: contestant.map(
          (c, i) => `${Math.round(anchor[i]).toLocaleString('en')}/${Math.round(c).toLocaleString('en')}`,
        ),
      };
    }
    await stopAll(counted);
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
const mark = (ok) => (ok ? '✔' : '✘');
const table = [
  `Command: \`${command}\``,
  `Load: \`wrk -t1 -c${connections} -d${duration}s --timeout 10s --latency -H 'Cookie: <session>' http://127.0.0.1:<port>/me\`, ${rounds} rounds after a ${warmup} s warm-up of each proxy; per round and pair (pairs in a rotating order) anchor, auth proxy, anchor, the auth proxy's run paired with the mean of the two anchor runs around it.` +
    (instructions
      ? ` Instructions: each proxy under \`valgrind --tool=callgrind\` (the upstream outside it), ${instructions} requests per count over one keep-alive connection after ${WARMUP_FACTOR * instructions} of warm-up, median of ${repeats} repeats (the two proxies of a pair counted side by side, each repeat's ratio paired).`
      : ''),
  '',
  '| auth proxy / anchor | anchor req/s | auth req/s | ratio by req/s (95 % CI) | anchor CPU µs/req | auth CPU µs/req | difference µs/req | ratio by CPU/req (95 % CI) | anchor p99 ms | auth p99 ms | added p99 ms (95 % CI) | anchor instructions/req | auth instructions/req | ratio by instructions | target |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
];
for (const pair of PAIRS) {
  const load = results[pair.key].load;
  const ins = results[pair.key].instructions;
  const cpuRatio = median(load.map((s) => s.cpuRatio));
  const added = median(load.map((s) => s.addedP99));
  const addedInterval = medianInterval(load.map((s) => s.addedP99));
  const target = pair.target
    ? `≥ ${TARGET.toFixed(2)} CPU ${mark(cpuRatio >= TARGET)}` +
      (ins ? `, instructions ${mark(ins.ratio >= TARGET)}` : '') +
      `; p99 ≤ +${P99_BUDGET_MS} ms ${mark(added <= P99_BUDGET_MS)}`
    : `reference ${REFERENCE.toFixed(2)}`;
  table.push(
    `| ${pair.label} | ${median(load.map((s) => s.anchorRps)).toFixed(0)} | ${median(load.map((s) => s.rps)).toFixed(0)} | ` +
      `${median(load.map((s) => s.ratio)).toFixed(2)} (${interval(load.map((s) => s.ratio))}) | ` +
      `${median(load.map((s) => s.anchorCpu)).toFixed(1)} | ${median(load.map((s) => s.cpuUs)).toFixed(1)} | ` +
      `${median(load.map((s) => s.cpuUs - s.anchorCpu)).toFixed(1)} | ${cpuRatio.toFixed(2)} (${interval(load.map((s) => s.cpuRatio))}) | ` +
      `${median(load.map((s) => s.anchorP99)).toFixed(2)} | ${median(load.map((s) => s.p99)).toFixed(2)} | ` +
      `${added >= 0 ? '+' : ''}${added.toFixed(2)} (${addedInterval ? addedInterval.map((x) => x.toFixed(2)).join(' to ') : '—'}) | ` +
      (ins
        ? `${Math.round(ins.anchor).toLocaleString('en')} | ${Math.round(ins.contestant).toLocaleString('en')} | ${ins.ratio.toFixed(3)} | `
        : '— | — | — | ') +
      `${target} |`,
  );
}
const split = (pair) => {
  const load = results[pair.key].load;
  const part = (total, system) => `${(total - system).toFixed(1)}/${system.toFixed(1)}`;
  return (
    `${pair.anchor} ${part(median(load.map((s) => s.anchorCpu)), median(load.map((s) => s.anchorSystem)))}, ` +
    `${pair.contestant} ${part(median(load.map((s) => s.cpuUs)), median(load.map((s) => s.systemUs)))}`
  );
};
const maxOther = Math.max(...PAIRS.flatMap((p) => results[p.key].load.map((s) => s.otherCores)));
table.push(
  '',
  `CPU µs/req in user/kernel mode (medians): ${PAIRS.map(split).join('; ')}.`,
  `Other load (the rest of the machine during a pair's runs: wrk and the upstream included): at most ${maxOther.toFixed(2)} cores.` +
    (instructions
      ? ` Instruction counts per repeat (anchor/auth): ${PAIRS.map((p) => `${p.key} ${results[p.key].instructions.repeats.join(', ')}`).join('; ')}.`
      : ''),
  `Machine: ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}, ${spawnSync('/usr/sbin/apache2', ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0].replace('Server version: ', '')}; dist/ built ${distBuilt.toISOString()} from the work tree (last commit then: ${head}); ${new Date().toISOString()}.`,
);
process.stdout.write(`${[...table, '', ...lines].join('\n')}\n`);
