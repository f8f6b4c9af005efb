#!/usr/bin/env node
/**
 * labgate/node's `createNodeListener` against a bare `node:http` server (the anchor): what converting
 * a request to a Web `Request` and writing the `Response` back costs, alone and under labgate.
 *
 *   node bench/node-listener.mjs [--rounds 5] [--duration 4] [--connections 50] [--warmup 2]
 *                                [--before REF] [--instructions N [--repeats 3]] [--only KEYS]
 *
 * Contestants, each its own Node process on 127.0.0.1, each answering `GET /me` with the same small
 * JSON (`{ id, username, name, email }`):
 *
 *   bare           node:http, `res.writeHead(200, …)` + `res.end(JSON.stringify(user))`: the anchor
 *   listener       createNodeListener, the handler returns `Response.json(user)` (Node's Response)
 *   listenerLight  the same with `LightResponse.json(user)`
 *   labgate        createNodeListener + `labgate.handle(request)` + `labgate.getSession(request)` with a
 *                  signed-in cookie (a real sign-in through the GitLab emulator), answering
 *                  `LightResponse.json` of the session's user
 *   labgateNative  the same answering `Response.json`
 *   before         (with --before REF) src/adapters/node.ts as it was at REF, the handler returning
 *                  `LightResponse.json(user)` where REF has it, else `Response.json(user)`
 *
 * labgate/node is compiled from src/adapters/node.ts (typescript's transpileModule, into a temporary
 * folder), so the work tree is measured; labgate's core and the emulator come from the package's
 * dist/ (run `npm run build` first when core changed). Load: Debian's wrk (`apt-get install -y wrk`),
 * `wrk -t1 -c50 -d4s`, one contestant at a time. Every round opens and closes with the anchor and
 * the others run between in a rotating order; a run's ratio is to the mean of the two anchor runs
 * around it. Besides req/s, each run reads the server's CPU time from /proc: CPU per request moves
 * much less than req/s on a shared machine, so it decides. `--instructions N` instead counts
 * instructions per request under valgrind's callgrind (bench/callgrind.mjs), which does not move with
 * the machine's load at all. `--only KEYS` (comma-separated) measures only those beside the anchor,
 * for a quick A/B. Every run is bounded by wrk's -d, the whole by a watchdog.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, get as httpGet } from 'node:http';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
/** Clock ticks per second of /proc/PID/stat's utime and stime (USER_HZ, 100 on Linux). */
const CLOCK_TICKS = 100;
const USER = { id: 1, username: 'alice', name: 'Alice Liddell', email: 'alice@acme.test' };

// -----------------------------------------------------------------------------------------------
// Server mode: `node bench/node-listener.mjs --serve KIND MODULE` (spawned by the bench itself).

if (process.argv[2] === '--serve') {
  const [, , , kind, modulePath] = process.argv;
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const node = modulePath ? await import(pathToFileURL(modulePath).href) : undefined;
  const publicUser = (u) => ({ id: u.id, username: u.username, name: u.name, email: u.email });
  if (kind === 'bare') {
    server.on('request', (_req, res) => {
      const body = JSON.stringify(USER);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  } else if (kind === 'listener') {
    server.on(
      'request',
      node.createNodeListener(() => Response.json(USER)),
    );
  } else if (kind === 'before') {
    // LightResponse where that version has it, so an A/B of two versions compares like with like.
    const json = node.LightResponse ? node.LightResponse.json : (data) => Response.json(data);
    server.on(
      'request',
      node.createNodeListener(() => json(USER)),
    );
  } else if (kind === 'listenerLight') {
    server.on(
      'request',
      node.createNodeListener(() => node.LightResponse.json(USER)),
    );
  } else {
    const { createLabgate, MemoryStore } = await import('labgate');
    const auth = createLabgate({
      gitlabUrl: process.env.GITLAB_URL,
      clientId: process.env.GITLAB_CLIENT_ID,
      clientSecret: process.env.GITLAB_CLIENT_SECRET,
      url: origin,
      secret: process.env.LABGATE_SECRET,
      logger: false,
      store: new MemoryStore(),
    });
    const json = kind === 'labgate' ? node.LightResponse.json : (data, init) => Response.json(data, init);
    server.on(
      'request',
      node.createNodeListener(async (request) => {
        const answered = await auth.handle(request);
        if (answered) return answered;
        const session = await auth.getSession(request);
        return session
          ? json(publicUser(session.user))
          : json({ error: 'session_required' }, { status: 401 });
      }),
    );
  }
  const stop = () => {
    server.closeAllConnections();
    server.close();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  setTimeout(stop, Number(process.env.BENCH_SERVER_LIFETIME_MS ?? 15 * 60_000)).unref();
  process.stdout.write(`READY ${JSON.stringify({ origin })}\n`);
} else {
  await bench();
}

// -----------------------------------------------------------------------------------------------

async function bench() {
  const { values: args } = parseArgs({
    options: {
      rounds: { type: 'string', default: '5' },
      duration: { type: 'string', default: '4' },
      connections: { type: 'string', default: '50' },
      warmup: { type: 'string', default: '2' },
      before: { type: 'string' },
      instructions: { type: 'string' },
      repeats: { type: 'string', default: '3' },
      only: { type: 'string' },
    },
  });
  const int = (name, max, min = 1) => {
    const n = Number(args[name]);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new Error(`--${name} must be an integer in [${min}, ${max}]`);
    return n;
  };
  const rounds = int('rounds', 50);
  const duration = int('duration', 60);
  const connections = int('connections', 1000);
  const warmup = int('warmup', 30, 0);
  const instructions = args.instructions === undefined ? 0 : int('instructions', 1_000_000, 100);
  const command = `node bench/node-listener.mjs ${process.argv.slice(2).join(' ')}`.trim();

  const children = new Set();
  const tmp = mkdtempSync(join(os.tmpdir(), 'labgate-node-bench-'));
  let emulator;
  const cleanup = () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
    emulator?.close().catch(() => {});
    rmSync(tmp, { recursive: true, force: true });
  };
  const budget = instructions ? 30 * 60_000 : (rounds * 7 * (duration + 1) + 7 * warmup + 120) * 1000;
  const watchdog = setTimeout(() => {
    process.stderr.write('bench: watchdog fired, stopping\n');
    cleanup();
    process.exit(2);
  }, budget);

  try {
    const ts = (await import('typescript')).default;
    const transpile = (source, file) => {
      writeFileSync(
        join(tmp, file),
        ts.transpileModule(source, {
          compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
        }).outputText,
      );
      return join(tmp, file);
    };
    const current = transpile(readFileSync(join(root, 'src/adapters/node.ts'), 'utf8'), 'node.mjs');
    const before = args.before
      ? transpile(
          execFileSync('git', ['show', `${args.before}:src/adapters/node.ts`], {
            cwd: root,
            encoding: 'utf8',
          }),
          'node-before.mjs',
        )
      : undefined;
    transpile(readFileSync(join(root, 'test/emulator/browser.ts'), 'utf8'), 'browser.mjs');
    const { Browser } = await import(pathToFileURL(join(tmp, 'browser.mjs')).href);
    const { startEmulator } = await import('labgate/emulator');
    emulator = await startEmulator();
    const app = emulator.applications[0];
    const env = {
      ...process.env,
      NODE_ENV: 'production',
      GITLAB_URL: emulator.url,
      GITLAB_CLIENT_ID: app.uid,
      GITLAB_CLIENT_SECRET: app.secret,
      LABGATE_SECRET: (await import('node:crypto')).randomBytes(32).toString('base64url'),
      BENCH_SERVER_LIFETIME_MS: String(budget + 30_000),
    };
    const { callgrindCommand, countInstructions } = await import('./callgrind.mjs');

    const contestants = [
      { key: 'bare', label: 'bare `node:http` (anchor)', module: undefined, target: '' },
      {
        key: 'listener',
        label: 'createNodeListener, handler returns `Response.json`',
        module: current,
        target: '≥ 0.80',
      },
      {
        key: 'listenerLight',
        label: 'createNodeListener, handler returns `LightResponse.json`',
        module: current,
        target: '≥ 0.80',
      },
      {
        key: 'labgate',
        label: 'createNodeListener + labgate.handle + getSession, `LightResponse.json`',
        module: current,
        target: '≥ 0.80 (issue: ≥ 0.90)',
      },
      { key: 'labgateNative', label: 'the same, answering `Response.json`', module: current, target: '' },
      ...(before
        ? [
            {
              key: 'before',
              label: `createNodeListener at ${args.before} (\`LightResponse.json\` where it has it, else \`Response.json\`)`,
              module: before,
              target: '',
            },
          ]
        : []),
    ];

    if (args.only) {
      const keep = new Set(['bare', ...args.only.split(',')]);
      for (const key of keep) {
        if (!contestants.some((c) => c.key === key)) throw new Error(`--only: no contestant ${key}`);
      }
      contestants.splice(0, contestants.length, ...contestants.filter((c) => keep.has(c.key)));
    }
    const start = (c) =>
      new Promise((resolve, reject) => {
        const script = fileURLToPath(import.meta.url);
        const serverArgs = ['--serve', c.key, ...(c.module ? [c.module] : [])];
        const [cmd, cmdArgs] = instructions
          ? callgrindCommand(tmp, c.key, ['--no-memory-reducer', script, ...serverArgs])
          : [process.execPath, [script, ...serverArgs]];
        const child = spawn(cmd, cmdArgs, { env, stdio: ['ignore', 'pipe', 'inherit'] });
        children.add(child);
        const timer = setTimeout(
          () => reject(new Error(`${c.key} did not start`)),
          instructions ? 300_000 : 20_000,
        );
        let buffer = '';
        child.stdout.on('data', (chunk) => {
          buffer += chunk;
          const line = buffer.split('\n').find((l) => l.startsWith('READY '));
          if (!line) return;
          clearTimeout(timer);
          resolve({ ...c, name: c.key, child, origin: JSON.parse(line.slice(6)).origin });
        });
        child.once('exit', (code) => reject(new Error(`${c.key} exited (${code}) before it was ready`)));
      });
    const servers = [];
    for (const c of contestants) servers.push(await start(c));

    // The labgate servers: sign Alice in through their routes and the emulator's pages.
    const alice = emulator.users.find((u) => u.username === 'alice');
    for (const server of servers) {
      if (!server.key.startsWith('labgate')) {
        server.cookie = '';
        continue;
      }
      const browser = new Browser();
      const login = await browser.get(`${server.origin}/auth/login?returnTo=%2Fme`);
      if (login.status !== 302) throw new Error(`${server.key}: /auth/login answered ${login.status}`);
      const location = await browser.approveToClient({
        url: emulator.url,
        authorizeUrl: login.location,
        login: alice.username,
        password: alice.password,
      });
      const callback = await browser.get(location);
      if (callback.status !== 303)
        throw new Error(`${server.key}: /auth/callback answered ${callback.status}`);
      const cookie = browser.jar.cookies('127.0.0.1').find((c) => c.name === 'labgate');
      if (!cookie) throw new Error(`${server.key}: no session cookie after sign-in`);
      server.cookie = `${cookie.name}=${cookie.value}`;
    }

    // Each answers the same JSON (and labgate 401 without its cookie), before and after the load.
    const check = async () => {
      for (const server of servers) {
        const { status, type, body } = await get(`${server.origin}/me`, server.cookie);
        if (status !== 200 || body !== JSON.stringify(USER) || type !== 'application/json') {
          throw new Error(`${server.key}: GET /me answered ${status} ${type} ${body}`);
        }
        if (server.cookie) {
          const anonymous = await get(`${server.origin}/me`, '');
          if (anonymous.status !== 401)
            throw new Error(`${server.key}: GET /me without a cookie answered ${anonymous.status}`);
        }
      }
    };
    await check();

    if (instructions) {
      const counts = await countInstructions({
        servers,
        dir: tmp,
        requests: instructions,
        warmup: 5 * instructions,
        repeats: int('repeats', 20),
        concurrency: 1,
        log: (line) => process.stderr.write(`bench: ${line}\n`),
      });
      const per = (key) => median(counts[key].map((r) => r.Ir));
      // The servers run each repeat side by side: a repeat's ratio pairs counts of the same stretch
      // (a collection in one repeat moves every server's count).
      const paired = (key) => median(counts[key].map((r, i) => counts.bare[i].Ir / r.Ir));
      const lines = [
        `Command: \`${command}\``,
        `Each server under \`valgrind --tool=callgrind\`, ${instructions} requests per count over one keep-alive connection, after ${5 * instructions} of warm-up; median of the repeats.`,
        '',
        '| contestant | instructions per request (median) | repeats | ratio to bare (median over the repeats, each paired) | target |',
        '|---|---:|---|---:|---|',
        ...servers.map(
          (s) =>
            `| ${s.label} | ${Math.round(per(s.key)).toLocaleString('en')} | ${counts[s.key].map((r) => Math.round(r.Ir).toLocaleString('en')).join(', ')} | ${paired(s.key).toFixed(2)} | ${s.target} |`,
        ),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
      return;
    }

    const wrk = (server, seconds) => {
      const stat = () => {
        const fields = readFileSync(`/proc/${server.child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
        // utime and stime (fields 14 and 15 of the whole line), in clock ticks.
        return Number(fields[11]) + Number(fields[12]);
      };
      const cpuBefore = stat();
      const out = execFileSync(
        'wrk',
        [
          '-t1',
          `-c${connections}`,
          `-d${seconds}s`,
          '--timeout',
          '2s',
          ...(server.cookie ? ['-H', `Cookie: ${server.cookie}`] : []),
          `${server.origin}/me`,
        ],
        { encoding: 'utf8', timeout: (seconds + 30) * 1000 },
      );
      const ticks = stat() - cpuBefore;
      const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
      const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)/.exec(out);
      if (errors) throw new Error(`${server.key}: ${errors[0]}`);
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
      return { rps, cpuUs: ((ticks / CLOCK_TICKS) * 1e6) / requests };
    };

    if (warmup > 0) for (const server of servers) wrk(server, warmup);
    const samples = Object.fromEntries(servers.map((s) => [s.key, []]));
    const others = servers.filter((s) => s.key !== 'bare');
    const bare = servers[0];
    let opening = wrk(bare, duration);
    samples.bare.push(opening);
    for (let round = 0; round < rounds; round++) {
      const order = others.map((_, i) => others[(i + round) % others.length]);
      const runs = order.map((server) => [server, wrk(server, duration)]);
      const closing = wrk(bare, duration);
      samples.bare.push(closing);
      for (const [server, run] of runs) {
        const anchorRps = (opening.rps + closing.rps) / 2;
        const anchorCpu = (opening.cpuUs + closing.cpuUs) / 2;
        samples[server.key].push({ ...run, ratio: run.rps / anchorRps, cpuRatio: anchorCpu / run.cpuUs });
      }
      process.stderr.write(`bench: round ${round + 1}/${rounds} done\n`);
      opening = closing;
    }
    await check();

    const lines = [
      `Command: \`${command}\``,
      `Load: \`wrk -t1 -c${connections} -d${duration}s\` per run, ${rounds} rounds after a ${warmup} s warm-up of each process; each round opens and closes with the anchor, the others between in a rotating order; ratios are to the mean of the two anchor runs around a run, the table shows their median.`,
      '',
      '| contestant | req/s (median) | ratio by req/s (median) | server CPU µs/req (median) | ratio by CPU/req (median; decides) | target |',
      '|---|---:|---:|---:|---:|---|',
      ...servers.map((s) => {
        const runs = samples[s.key];
        const r = s.key === 'bare' ? 1 : median(runs.map((x) => x.ratio));
        const c = s.key === 'bare' ? 1 : median(runs.map((x) => x.cpuRatio));
        return `| ${s.label} | ${median(runs.map((x) => x.rps)).toFixed(0)} | ${r.toFixed(2)} | ${median(runs.map((x) => x.cpuUs)).toFixed(1)} | ${c.toFixed(2)} | ${s.target} |`;
      }),
      '',
      `Machine: ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}, ${new Date().toISOString()}; src/adapters/node.ts of git ${execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim()}.`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    clearTimeout(watchdog);
    cleanup();
  }
}

/** One GET on a connection of its own (a kept-alive one may be closing after the load). */
function get(url, cookie) {
  return new Promise((resolve, reject) => {
    const request = httpGet(url, { agent: false, headers: cookie ? { cookie } : {} }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => {
        body += chunk;
      });
      response.on('end', () =>
        resolve({ status: response.statusCode, type: response.headers['content-type'], body }),
      );
    });
    request.setTimeout(10_000, () => request.destroy(new Error(`GET ${url}: no answer within 10 s`)));
    request.on('error', reject);
  });
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}
