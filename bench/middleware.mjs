#!/usr/bin/env node
/**
 * The cost of labgate/express's session check alone, in process: `labgate(auth)` then
 * `requireUser()` on a request with a valid session cookie (a session verified moments ago, as on
 * every request but one in `sessionCacheTtl`), without HTTP, Express's router or a socket. The
 * anchor is a middleware of the same shape that reads the Cookie header and sets a fixed user.
 *
 *   node bench/middleware.mjs [--rounds 7] [--iterations 200000] [--other DIR]
 *
 * `--other DIR` adds another build of labgate (DIR holds core/ and adapters/), e.g. one of an older
 * commit, to compare a change side by side. Each contestant runs in its own child process
 * (--iterations requests, five batches, the fastest kept), interleaved over --rounds; the table shows
 * the median. Every loop is bounded by its iteration count; each child by a timeout.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '7' },
    iterations: { type: 'string', default: '200000' },
    other: { type: 'string' },
    child: { type: 'string' },
    dist: { type: 'string' },
  },
});
const iterations = Math.min(Math.max(Number(args.iterations) || 0, 1000), 2_000_000);

if (args.child) {
  process.stdout.write(`${await child(args.child, args.dist)}\n`);
  process.exit(0);
}

/** One contestant: ns per request, the fastest of five batches. */
async function child(kind, dist) {
  const cookieName = 'labgate';
  const id = randomBytes(16).toString('base64url');
  const secret = randomBytes(32).toString('base64url');
  const cookie = `theme=dark; ${cookieName}=${id}.${secret}`;
  const user = {
    sub: '1',
    issuer: 'http://127.0.0.1:9',
    id: 1,
    username: 'alice',
    name: 'Alice Liddell',
    email: 'alice@acme.test',
    emailVerified: true,
    avatarUrl: null,
    webUrl: null,
    createdAt: null,
    lastSignInAt: null,
    state: null,
    bot: null,
    external: null,
    twoFactorEnabled: null,
    groups: [],
    roles: [],
  };
  let chain;
  if (kind === 'anchor') {
    const middleware = (req, _res, next) => {
      req.user = req.headers.cookie?.includes(`${cookieName}=`) ? user : null;
      next();
    };
    const guard = (req, _res, next) => (req.user ? next() : next(new Error('no user')));
    chain = [middleware, guard];
  } else {
    const from = (path) => (dist ? pathToFileURL(join(dist, path)).href : undefined);
    const core = await import(from('core/index.js') ?? 'labgate');
    const adapter = await import(from('adapters/express.js') ?? 'labgate/express');
    const store = new core.MemoryStore();
    const now = Date.now();
    // A server session as sign-in stores it: only the hash of the cookie's secret is kept.
    await store.setSession({
      id,
      secretHash: createHash('sha256').update(secret).digest('base64url'),
      userId: 'u1',
      identity: `${user.issuer} ${user.sub}`,
      user,
      tokens: 'sealed-tokens-are-not-opened-on-this-path',
      createdAt: now,
      expiresAt: now + 3600_000,
      idleExpiresAt: now + 3600_000,
    });
    const auth = core.createLabgate({
      gitlabUrl: 'http://127.0.0.1:9',
      clientId: 'bench',
      clientSecret: 'bench',
      url: 'http://127.0.0.1:3000',
      secret: randomBytes(32).toString('base64url'),
      store,
      logger: false,
    });
    const middleware = adapter.labgate(auth);
    const guard = adapter.requireUser({ api: true });
    chain = [middleware, guard];
  }
  const [first, second] = chain;
  const once = () =>
    new Promise((done, fail) => {
      const req = { method: 'GET', url: '/me', originalUrl: '/me', headers: { host: 'x', cookie } };
      const res = {
        statusCode: 200,
        setHeader() {},
        end: () => fail(new Error(`answered ${res.statusCode}`)),
      };
      first(req, res, (error) => (error ? fail(error) : second(req, res, (e) => (e ? fail(e) : done(req)))));
    });
  const req = await once();
  if ((req.labgate?.user ?? req.user)?.username !== 'alice') throw new Error(`${kind}: no signed-in user`);
  for (let i = 0; i < iterations; i++) await once();
  let best = Number.POSITIVE_INFINITY;
  for (let batch = 0; batch < 5; batch++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) await once();
    best = Math.min(best, Number(process.hrtime.bigint() - start) / iterations);
  }
  return best;
}

// ---------------------------------------------------------------------------------------------

const rounds = Math.min(Math.max(Number(args.rounds) || 0, 1), 25);
const contestants = [
  { key: 'anchor', label: 'a middleware that reads the Cookie header + a guard (anchor)' },
  { key: 'labgate', label: '`labgate(auth)` + `requireUser()`, the built package' },
];
if (args.other)
  contestants.push({ key: 'other', label: `the same, build in ${args.other}`, dist: resolve(args.other) });
const samples = Object.fromEntries(contestants.map((c) => [c.key, []]));
for (let round = 0; round < rounds; round++) {
  for (const c of contestants) {
    const run = spawnSync(
      process.execPath,
      [
        fileURLToPath(import.meta.url),
        '--child',
        c.key === 'other' ? 'labgate' : c.key,
        '--iterations',
        String(iterations),
        ...(c.dist ? ['--dist', c.dist] : []),
      ],
      { cwd: dirname(here), encoding: 'utf8', timeout: 120_000 },
    );
    if (run.status !== 0) {
      process.stderr.write(`bench: ${c.key} failed:\n${run.stderr}`);
      process.exit(1);
    }
    samples[c.key].push(Number(run.stdout.trim()));
  }
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const anchor = median(samples.anchor);
const command = `node bench/middleware.mjs${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`;
const lines = [
  `Command: \`${command}\` (${new Date().toISOString().slice(0, 10)}, Node ${process.version})`,
  '',
  '| contestant | ns per request (median) | rounds | above the anchor |',
  '|---|---:|---|---:|',
  ...contestants.map((c) => {
    const m = median(samples[c.key]);
    return `| ${c.label} | ${m.toFixed(0)} | ${samples[c.key].map((x) => x.toFixed(0)).join(', ')} | ${c.key === 'anchor' ? '—' : `+${(m - anchor).toFixed(0)} ns`} |`;
  }),
];
process.stdout.write(`${lines.join('\n')}\n`);
