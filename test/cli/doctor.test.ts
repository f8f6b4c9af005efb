/**
 * `labgate doctor` against the emulator on loopback: a correct setup passes every check, and each
 * misconfiguration injected gives its own ✗ (or ⚠) with the fix. The command runs in process with its
 * output captured (`runDoctor`); only where process start matters (NODE_EXTRA_CA_CERTS) does a test
 * spawn the built command (`npm run build` first).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  request,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import {
  type AddressInfo,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runDoctor } from '../../src/cli/doctor.js';
import type { CheckResult } from '../../src/cli/report.js';
import { demoFixtures, type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { openStore } from '../../src/stores/index.js';

const SPECIAL_ID = 'a1'.repeat(32);
// Characters that HTTP Basic would have to form-url-encode (RFC 6749 §2.3.1).
const SPECIAL_SECRET = 'gloas-a+b/c d:é%&=';

let gitlab: RunningEmulator;
let dir: string;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  const fixtures = demoFixtures();
  fixtures.applications!.push({
    name: 'special secret',
    clientId: SPECIAL_ID,
    clientSecret: SPECIAL_SECRET,
    redirectUris: ['http://127.0.0.1:3000/auth/callback'],
    scopes: ['openid', 'profile', 'email'],
    confidential: true,
  });
  gitlab = await startEmulator({ fixtures });
});
afterAll(() => gitlab.close());
beforeEach(async () => {
  gitlab.control.reset();
  dir = await mkdtemp(join(tmpdir(), 'labgate-doctor-'));
});
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
  await rm(dir, { recursive: true, force: true });
});

const app = () => gitlab.applications[0]!;

/** A configuration that passes every check. */
function goodEnv(overrides: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    GITLAB_URL: gitlab.url,
    GITLAB_CLIENT_ID: app().uid,
    GITLAB_CLIENT_SECRET: app().secret,
    LABGATE_URL: 'http://127.0.0.1:3000',
    LABGATE_SECRET: randomBytes(32).toString('base64url'),
    LABGATE_STORE: `sqlite:${join(dir, 'data', 'labgate.db')}`,
    ...overrides,
  };
}

interface Run {
  code: number;
  out: string;
  err: string;
  results: CheckResult[];
  byId: (id: string) => CheckResult;
}

/** Runs the doctor in process with --json (unless `text`), capturing its output. */
async function doctor(
  env: Record<string, string | undefined>,
  args: string[] = [],
  options: { text?: boolean; tty?: boolean; cwd?: string } = {},
): Promise<Run> {
  let out = '';
  let err = '';
  const code = await runDoctor({
    args: options.text ? args : ['--json', ...args],
    env,
    cwd: options.cwd ?? dir,
    stdout: { write: (t: string) => (out += t), isTTY: options.tty === true },
    stderr: { write: (t: string) => (err += t), isTTY: options.tty === true },
  });
  const results: CheckResult[] =
    options.text || code === 2 ? [] : (JSON.parse(out) as { checks: CheckResult[] }).checks;
  const byId = (id: string) => {
    const found = results.find((r) => r.id === id);
    if (!found) throw new Error(`no result ${id} in ${out}`);
    return found;
  };
  return { code, out, err, results, byId };
}

/** Status by id, for one-glance assertions. */
const statuses = (run: Run) => Object.fromEntries(run.results.map((r) => [r.id, r.status]));

const listen = (server: NetServer): Promise<number> =>
  new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );

/**
 * A reverse proxy in front of the emulator (plain or TLS) that puts its own address in GitLab's answers,
 * and may rewrite a body or the Date header.
 */
async function startProxy(
  target: string,
  options: {
    tls?: { key: string; cert: string };
    rewrite?: (body: string, path: string, self: string) => string;
    date?: () => string;
  } = {},
): Promise<string> {
  let self = '';
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const upstream = request(
        `${target}${req.url}`,
        { method: req.method, headers: { ...req.headers, host: new URL(target).host } },
        (answer) => {
          const parts: Buffer[] = [];
          answer.on('data', (c: Buffer) => parts.push(c));
          answer.on('end', () => {
            let body = Buffer.concat(parts).toString('utf8').split(target).join(self);
            if (options.rewrite) body = options.rewrite(body, req.url ?? '/', self);
            const headers = { ...answer.headers };
            delete headers['content-length'];
            delete headers['transfer-encoding'];
            delete headers['connection'];
            delete headers['keep-alive'];
            if (typeof headers.location === 'string')
              headers.location = headers.location.split(target).join(self);
            if (options.date) headers.date = options.date();
            res.writeHead(answer.statusCode ?? 502, headers);
            res.end(body);
          });
        },
      );
      upstream.on('error', () => res.destroy());
      upstream.end(Buffer.concat(chunks));
    });
  };
  const server = options.tls ? createHttpsServer(options.tls, handler) : createHttpServer(handler);
  const port = await listen(server);
  self = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  closers.push(
    () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  );
  return self;
}

describe('labgate doctor: a correct setup', () => {
  it('passes every check and exits 0', async () => {
    const run = await doctor(goodEnv());
    expect(run.code).toBe(0);
    expect(statuses(run)).toEqual({
      configuration: 'ok',
      'gitlab-reachable': 'ok',
      'gitlab-tls': 'ok',
      proxy: 'ok',
      discovery: 'ok',
      oidc: 'ok',
      pkce: 'ok',
      scopes: 'ok',
      'client-credentials': 'ok',
      'device-flow': 'ok',
      clock: 'ok',
      secret: 'ok',
      cookies: 'ok',
      store: 'ok',
    });
    expect(run.byId('configuration').detail).toContain('redirect URI http://127.0.0.1:3000/auth/callback');
    // The probe was a token request GitLab answered invalid_grant: the client passed.
    const probes = gitlab.control.requests({ path: '/oauth/token' });
    expect(probes.map((p) => [p.status, p.clientId])).toEqual([[400, app().uid]]);
  });

  it('prints --json as the checks and a summary, each check linking to its docs section', async () => {
    const run = await doctor(goodEnv({ LABGATE_SECRET: undefined }));
    const parsed = JSON.parse(run.out) as {
      checks: CheckResult[];
      summary: { ok: number; warn: number; fail: number; skip: number; exitCode: number };
    };
    expect(run.code).toBe(1);
    expect(parsed.summary).toEqual({ ok: 13, warn: 0, fail: 1, skip: 0, exitCode: 1 });
    for (const result of parsed.checks) {
      expect(
        Object.keys(result).every((k) => ['id', 'title', 'status', 'detail', 'fix', 'docs'].includes(k)),
      ).toBe(true);
      expect(result.docs).toBe(`docs/doctor.md#${result.id}`);
      if (result.status === 'fail' || result.status === 'warn') expect(result.fix).toBeTruthy();
    }
    const docs = readFileSync(fileURLToPath(new URL('../../docs/doctor.md', import.meta.url)), 'utf8');
    for (const result of parsed.checks) expect(docs).toContain(`\n## ${result.docs!.split('#')[1]}\n`);
  });

  it('stays plain when piped: no ANSI codes, no progress line', async () => {
    const run = await doctor(goodEnv({ GITLAB_CLIENT_SECRET: 'wrong' }), [], { text: true });
    expect(run.code).toBe(1);
    expect(run.out).toMatch(/^✓ Configuration read$/m);
    expect(run.out).toMatch(/^✗ GitLab refused the client id or secret$/m);
    expect(run.out).toMatch(/^ {4}fix: /m);
    expect(run.out).toMatch(/^ {4}docs: docs\/doctor\.md#client-credentials$/m);
    expect(run.out).toMatch(/12 ✓ {2}1 ⚠ {2}1 ✗/);
    expect(run.out).not.toContain('\x1b');
    expect(run.err).toBe('');
  });

  it('colours a terminal and shows progress on stderr, unless NO_COLOR is set', async () => {
    const tty = await doctor(goodEnv(), [], { text: true, tty: true });
    expect(tty.out).toContain('\x1b[32m✓\x1b[0m');
    expect(tty.err).toContain('\r\x1b[2K');
    expect(tty.err).toContain('probing the client credentials…');
    const noColour = await doctor(goodEnv({ NO_COLOR: '1' }), [], { text: true, tty: true });
    expect(noColour.out).not.toContain('\x1b');
  });
});

describe('labgate doctor: the client credentials', () => {
  it('a wrong secret: ✗ invalid_client, with the fix', async () => {
    const run = await doctor(goodEnv({ GITLAB_CLIENT_SECRET: 'gloas-wrong' }));
    const result = run.byId('client-credentials');
    expect(result.status).toBe('fail');
    expect(result.title).toBe('GitLab refused the client id or secret');
    expect(result.detail).toContain('401 invalid_client');
    expect(result.fix).toContain('Renew secret');
    expect(run.code).toBe(1);
  });

  it('a renewed secret: the old one fails, the new one passes', async () => {
    const old = app().secret;
    const answer = await fetch(`${gitlab.url}/-/emulator/applications/${app().uid}/renew-secret`, {
      method: 'POST',
    });
    const { secret } = (await answer.json()) as { secret: string };
    expect(secret).not.toBe(old);
    expect((await doctor(goodEnv({ GITLAB_CLIENT_SECRET: old }))).byId('client-credentials').status).toBe(
      'fail',
    );
    const renewed = await doctor(goodEnv({ GITLAB_CLIENT_SECRET: secret }));
    expect(renewed.byId('client-credentials').status).toBe('ok');
    // In process too.
    const again = gitlab.control.renewSecret(app().uid);
    expect((await doctor(goodEnv({ GITLAB_CLIENT_SECRET: secret }))).byId('client-credentials').status).toBe(
      'fail',
    );
    expect((await doctor(goodEnv({ GITLAB_CLIENT_SECRET: again }))).code).toBe(0);
  });

  it('an unknown client id: ✗ invalid_client', async () => {
    const run = await doctor(goodEnv({ GITLAB_CLIENT_ID: 'f'.repeat(64) }));
    expect(run.byId('client-credentials')).toMatchObject({
      status: 'fail',
      title: 'GitLab refused the client id or secret',
    });
  });

  it('says when the client id does not look like a GitLab Application ID', async () => {
    const run = await doctor(goodEnv({ GITLAB_CLIENT_ID: 'my-app' }));
    expect(run.byId('client-credentials').detail).toContain('64 hexadecimal characters');
  });

  it('a confidential application without its secret: set GITLAB_CLIENT_SECRET', async () => {
    const run = await doctor(goodEnv({ GITLAB_CLIENT_SECRET: undefined }));
    expect(run.byId('client-credentials')).toMatchObject({
      status: 'fail',
      title: 'this application is confidential: set GITLAB_CLIENT_SECRET',
    });
  });

  it('a public application without a secret passes', async () => {
    const publicApp = gitlab.applications[1]!;
    const run = await doctor(
      goodEnv({
        GITLAB_CLIENT_ID: publicApp.uid,
        GITLAB_CLIENT_SECRET: undefined,
        LABGATE_URL: 'http://127.0.0.1',
      }),
    );
    expect(run.byId('client-credentials')).toMatchObject({
      status: 'ok',
      title: 'GitLab knows the client id (a public application: no secret needed)',
    });
  });

  it('sends the credentials as labgate does, so a secret with +, /, space, : and é passes', async () => {
    const run = await doctor(goodEnv({ GITLAB_CLIENT_ID: SPECIAL_ID, GITLAB_CLIENT_SECRET: SPECIAL_SECRET }));
    expect(run.byId('client-credentials').status).toBe('ok');
    const wrong = await doctor(
      goodEnv({ GITLAB_CLIENT_ID: SPECIAL_ID, GITLAB_CLIENT_SECRET: `${SPECIAL_SECRET}x` }),
    );
    expect(wrong.byId('client-credentials').status).toBe('fail');
  });
});

describe('labgate doctor: discovery and the issuer', () => {
  it('a discovery naming another issuer: ✗ with the value GitLab names', async () => {
    const proxy = await startProxy(gitlab.url, {
      rewrite: (body, path) =>
        path.endsWith('/openid-configuration')
          ? JSON.stringify({ ...JSON.parse(body), issuer: 'https://gitlab.other.example' })
          : body,
    });
    const run = await doctor(goodEnv({ GITLAB_URL: proxy }));
    expect(run.byId('discovery')).toMatchObject({
      status: 'fail',
      title: `GitLab's discovery names the issuer https://gitlab.other.example, not ${proxy}`,
    });
    expect(run.byId('discovery').fix).toContain('GITLAB_URL=https://gitlab.other.example');
    expect(statuses(run)).toMatchObject({ oidc: 'skip', 'client-credentials': 'skip' });
    expect(run.code).toBe(1);
  });

  it('an issuer under a sub-path of GITLAB_URL names the sub-path', async () => {
    const proxy = await startProxy(gitlab.url, {
      rewrite: (body, path, self) =>
        path.endsWith('/openid-configuration')
          ? JSON.stringify({ ...JSON.parse(body), issuer: `${self}/gitlab` })
          : body,
    });
    const run = await doctor(goodEnv({ GITLAB_URL: proxy }));
    expect(run.byId('discovery').title).toBe(`GitLab lives under /gitlab: set GITLAB_URL=${proxy}/gitlab`);
  });

  it('GitLab under /gitlab and GITLAB_URL without it: discovery 404, the sub-path named', async () => {
    const sub = await startEmulator({ basePath: '/gitlab' });
    closers.push(() => sub.close());
    const origin = new URL(sub.url).origin;
    expect(sub.url).toBe(`${origin}/gitlab`);
    const run = await doctor(goodEnv({ GITLAB_URL: origin }));
    expect(run.byId('discovery')).toMatchObject({
      status: 'fail',
      title: `GitLab lives under /gitlab: set GITLAB_URL=${origin}/gitlab`,
    });
    expect(run.byId('discovery').detail).toContain('404');
    const fixed = await doctor(goodEnv({ GITLAB_URL: sub.url }));
    expect(fixed.byId('discovery').status).toBe('ok');
    expect(fixed.code).toBe(0);
  });

  it('the reverse: GITLAB_URL with /gitlab while GitLab lives at the root', async () => {
    const run = await doctor(goodEnv({ GITLAB_URL: `${gitlab.url}/gitlab` }));
    expect(run.byId('discovery')).toMatchObject({
      status: 'fail',
      title: `GitLab lives at ${gitlab.url}, not under /gitlab: set GITLAB_URL=${gitlab.url}`,
    });
  });

  it('no GitLab at all at GITLAB_URL', async () => {
    const other = createHttpServer((_req, res) => {
      res.writeHead(404).end('not here');
    });
    const port = await listen(other);
    closers.push(() => new Promise((resolve) => other.close(resolve)));
    const run = await doctor(goodEnv({ GITLAB_URL: `http://127.0.0.1:${port}` }));
    expect(run.byId('discovery')).toMatchObject({
      status: 'fail',
      title: `No GitLab at http://127.0.0.1:${port}`,
    });
  });

  it('GitLab does not offer a scope the configuration asks for', async () => {
    const run = await doctor(goodEnv({ GITLAB_SCOPES: 'openid profile email read_everything' }));
    expect(run.byId('scopes')).toMatchObject({
      status: 'fail',
      title: 'GitLab does not offer the scope read_everything',
    });
  });

  it('counts the scopes the policy needs', async () => {
    const run = await doctor(
      goodEnv({
        LABGATE_ALLOW: 'group:acme/platform>=developer',
        GITLAB_SCOPES: 'openid profile email read_api',
      }),
    );
    expect(run.byId('scopes').title).toBe('GitLab offers the scopes needed: openid profile email read_api');
  });

  it('the device flow is information only: not available is ⚠, never ✗', async () => {
    gitlab.control.injectFault({ path: '/oauth/authorize_device', status: 404 });
    const run = await doctor(goodEnv());
    expect(run.byId('device-flow')).toMatchObject({ status: 'warn', title: 'Device flow not available' });
    expect(run.code).toBe(0);
  });
});

describe('labgate doctor: reaching GitLab', () => {
  it('an unreachable host (a closed port): ✗, and the checks that need GitLab are not run', async () => {
    const closed = createHttpServer();
    const port = await listen(closed);
    await new Promise((resolve) => closed.close(resolve));
    const run = await doctor(goodEnv({ GITLAB_URL: `http://127.0.0.1:${port}` }));
    expect(run.byId('gitlab-reachable')).toMatchObject({
      status: 'fail',
      title: `Nothing listens at 127.0.0.1:${port}`,
    });
    expect(statuses(run)).toMatchObject({ discovery: 'skip', 'client-credentials': 'skip', clock: 'skip' });
    expect(run.code).toBe(1);
  });

  it('a GitLab that accepts connections and never answers: ✗ after --timeout, no hang', async () => {
    const sockets: Socket[] = [];
    const silent = createNetServer((socket) => sockets.push(socket));
    const port = await listen(silent);
    closers.push(
      () =>
        new Promise((resolve) => {
          for (const socket of sockets) socket.destroy();
          silent.close(resolve);
        }),
    );
    const run = await doctor(goodEnv({ GITLAB_URL: `http://127.0.0.1:${port}` }), ['--timeout', '300ms']);
    expect(run.byId('gitlab-reachable').status).toBe('ok');
    expect(run.byId('discovery')).toMatchObject({
      status: 'fail',
      title: `Discovery at http://127.0.0.1:${port} did not answer`,
    });
    expect(run.byId('discovery').detail).toContain('TIMEOUT');
  });

  it('https:// to a port that does not speak TLS', async () => {
    const port = new URL(gitlab.url).port;
    const run = await doctor(goodEnv({ GITLAB_URL: `https://127.0.0.1:${port}` }));
    expect(run.byId('gitlab-tls')).toMatchObject({
      status: 'fail',
      title: `No TLS handshake with 127.0.0.1:${port}`,
    });
    expect(run.byId('gitlab-tls').fix).toContain('does not speak TLS');
  });

  it('a host name that does not resolve', async () => {
    const run = await doctor(goodEnv({ GITLAB_URL: 'https://gitlab.invalid' }));
    expect(run.byId('gitlab-reachable')).toMatchObject({
      status: 'fail',
      title: "GitLab's host name gitlab.invalid does not resolve",
    });
  });

  it('plain http beyond loopback is refused', async () => {
    const run = await doctor(goodEnv({ GITLAB_URL: 'http://gitlab.invalid' }));
    expect(run.byId('configuration').status).toBe('fail');
    expect(run.byId('gitlab-tls').status).toBe('fail');
  });

  it('proxy variables: ⚠ Node 20 ignores them, ✓ when NO_PROXY exempts GitLab', async () => {
    const run = await doctor(goodEnv({ HTTP_PROXY: 'http://user:pw@proxy.invalid:3128' }));
    const proxy = run.byId('proxy');
    if (Number(process.versions.node.split('.')[0]) < 22) {
      expect(proxy.status).toBe('warn');
      expect(proxy.title).toContain("Node's fetch ignores it");
      expect(proxy.detail).toContain('http://***@proxy.invalid:3128');
      expect(proxy.detail).not.toContain('pw');
      // What the warning says is what happened: the unreachable proxy was not used.
      expect(run.byId('discovery').status).toBe('ok');
    }
    const exempt = await doctor(
      goodEnv({ HTTP_PROXY: 'http://proxy.invalid:3128', NO_PROXY: 'localhost,127.0.0.1' }),
    );
    expect(exempt.byId('proxy').status).toBe('ok');
  });
});

describe('labgate doctor: TLS with a private CA', () => {
  let certs: string;
  beforeAll(async () => {
    certs = await mkdtemp(join(tmpdir(), 'labgate-doctor-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '30',
        '-keyout',
        join(certs, 'key.pem'),
        '-out',
        join(certs, 'cert.pem'),
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
  });
  afterAll(() => rm(certs, { recursive: true, force: true }));

  const tls = () => ({
    key: readFileSync(join(certs, 'key.pem'), 'utf8'),
    cert: readFileSync(join(certs, 'cert.pem'), 'utf8'),
  });

  it('without the CA: ✗ whose fix names NODE_EXTRA_CA_CERTS', async () => {
    const proxy = await startProxy(gitlab.url, { tls: tls() });
    const run = await doctor(goodEnv({ GITLAB_URL: proxy }));
    const result = run.byId('gitlab-tls');
    expect(result.status).toBe('fail');
    expect(result.title).toBe("GitLab's certificate is not trusted (a private or self-signed CA)");
    expect(result.detail).toContain('DEPTH_ZERO_SELF_SIGNED_CERT');
    expect(result.fix).toMatch(/^Set NODE_EXTRA_CA_CERTS=/);
    expect(run.byId('discovery').status).toBe('fail');
  });

  it('NODE_EXTRA_CA_CERTS only in .env: the fix says Node reads it at process start', async () => {
    const proxy = await startProxy(gitlab.url, { tls: tls() });
    await writeFile(join(dir, '.env'), `NODE_EXTRA_CA_CERTS=${join(certs, 'cert.pem')}\n`);
    const run = await doctor(goodEnv({ GITLAB_URL: proxy }));
    expect(run.byId('gitlab-tls').fix).toContain('Node reads it only when the process starts');
  });

  it('with the CA in NODE_EXTRA_CA_CERTS at process start: every check passes', async () => {
    const proxy = await startProxy(gitlab.url, { tls: tls() });
    const { code, out } = await spawnDoctor(['--json'], {
      ...goodEnv({ GITLAB_URL: proxy, LABGATE_URL: 'http://127.0.0.1:3000' }),
      NODE_EXTRA_CA_CERTS: join(certs, 'cert.pem'),
    });
    const checks = (JSON.parse(out) as { checks: CheckResult[] }).checks;
    expect(Object.fromEntries(checks.map((c) => [c.id, c.status]))).toMatchObject({
      'gitlab-tls': 'ok',
      discovery: 'ok',
      'client-credentials': 'ok',
    });
    expect(checks.find((c) => c.id === 'gitlab-tls')!.detail).toContain('certificate for 127.0.0.1');
    expect(code).toBe(0);
  });
});

describe('labgate doctor: local settings', () => {
  it('the store down: PostgreSQL and Redis', async () => {
    const pg = await doctor(goodEnv({ LABGATE_STORE: 'postgres://127.0.0.1:1/x' }));
    expect(pg.byId('store').status).toBe('fail');
    expect(pg.byId('store').title).toContain('postgres://127.0.0.1:1/x');
    expect(pg.byId('store').fix).toContain('Start PostgreSQL');
    const redis = await doctor(goodEnv({ LABGATE_STORE: 'redis://:hunter2@127.0.0.1:1' }));
    expect(redis.byId('store').status).toBe('fail');
    expect(redis.out).not.toContain('hunter2');
    expect(redis.code).toBe(1);
  });

  it('an existing SQLite store is opened and migrated; a file in the way of its folder is ✗', async () => {
    const path = join(dir, 'data', 'labgate.db');
    await mkdir(join(dir, 'data'));
    await (await openStore(`sqlite:${path}`)).close?.();
    const run = await doctor(goodEnv({ LABGATE_STORE: `sqlite:${path}` }));
    expect(run.byId('store').title).toContain('is reachable and migrated (its folder is writable)');
    await writeFile(join(dir, 'file'), '');
    const blocked = await doctor(
      goodEnv({ LABGATE_STORE: `sqlite:${join(dir, 'file', 'x', 'labgate.db')}` }),
    );
    expect(blocked.byId('store').status).toBe('fail');
  });

  it('an unknown store scheme, and memory: ⚠', async () => {
    expect((await doctor(goodEnv({ LABGATE_STORE: 'mongodb://x' }))).byId('store').status).toBe('fail');
    expect((await doctor(goodEnv({ LABGATE_STORE: 'memory:' }))).byId('store').status).toBe('warn');
  });

  it('a weak secret: missing or short is ✗ with `labgate secret`, a pattern is ⚠', async () => {
    const missing = (await doctor(goodEnv({ LABGATE_SECRET: undefined }))).byId('secret');
    expect(missing).toMatchObject({ status: 'fail', title: 'LABGATE_SECRET is not set' });
    expect(missing.fix).toContain('npx labgate secret');
    const short = (await doctor(goodEnv({ LABGATE_SECRET: randomBytes(16).toString('base64url') }))).byId(
      'secret',
    );
    expect(short.status).toBe('fail');
    expect(short.title).toContain('16 bytes');
    const repeated = await doctor(goodEnv({ LABGATE_SECRET: 'a'.repeat(48) }));
    expect(repeated.byId('secret').status).toBe('warn');
    expect(repeated.code).toBe(0);
    const rotating = await doctor(
      goodEnv({
        LABGATE_SECRET: `${randomBytes(32).toString('base64url')},${randomBytes(32).toString('base64url')}`,
      }),
    );
    expect(rotating.byId('secret').title).toContain('2 secrets');
  });

  it('cookies follow LABGATE_URL: https ✓ __Host-, http beyond loopback ⚠', async () => {
    const https = (await doctor(goodEnv({ LABGATE_URL: 'https://app.example.com' }))).byId('cookies');
    expect(https).toMatchObject({
      status: 'ok',
      title: 'Cookies: __Host-labgate, Secure, HttpOnly, SameSite=Lax',
    });
    const http = (await doctor(goodEnv({ LABGATE_URL: 'http://app.example.com' }))).byId('cookies');
    expect(http.status).toBe('warn');
    expect(http.fix).toContain('LABGATE_URL=https://app.example.com');
    const loopback = (await doctor(goodEnv())).byId('cookies');
    expect(loopback.status).toBe('ok');
    expect(loopback.title).toContain('not Secure (plain http on loopback)');
  });

  it('a skewed clock: ✗ beyond 60 s, ⚠ beyond 10 s', async () => {
    const ahead = await startProxy(gitlab.url, { date: () => new Date(Date.now() + 120_000).toUTCString() });
    const far = await doctor(goodEnv({ GITLAB_URL: ahead }));
    expect(far.byId('clock').status).toBe('fail');
    expect(far.byId('clock').title).toMatch(/^This clock is 1(19|20|21) s behind GitLab's/);
    const behind = await startProxy(gitlab.url, { date: () => new Date(Date.now() - 30_000).toUTCString() });
    const near = await doctor(goodEnv({ GITLAB_URL: behind }));
    expect(near.byId('clock').status).toBe('warn');
    expect(near.byId('clock').title).toMatch(/ahead of GitLab's/);
  });

  it('a configuration the app would refuse: ✗ configuration, the GitLab checks still run', async () => {
    const run = await doctor(goodEnv({ GITLAB_CLIENT_ID: undefined }));
    expect(run.byId('configuration').status).toBe('fail');
    expect(run.byId('configuration').fix).toContain('GITLAB_CLIENT_ID');
    expect(run.byId('discovery').status).toBe('ok');
    expect(run.byId('client-credentials').status).toBe('skip');
    const policy = await doctor(goodEnv({ LABGATE_ALLOW: 'project:acme/app>=developer' }));
    expect(policy.byId('configuration').title).toContain('read_api');
  });

  it('--gateway: the redirect URI is LABGATE_URL/oauth2/callback', async () => {
    const run = await doctor(goodEnv({ LABGATE_URL: 'http://127.0.0.1:4180' }), ['--gateway']);
    expect(run.byId('configuration').detail).toContain('redirect URI http://127.0.0.1:4180/oauth2/callback');
    expect(run.code).toBe(0);
  });
});

describe('labgate doctor: the .env file and the command line', () => {
  it('reads .env for what the environment lacks, never over it', async () => {
    const env = goodEnv();
    await writeFile(
      join(dir, '.env'),
      `GITLAB_CLIENT_SECRET=gloas-wrong\nLABGATE_SECRET=${env['LABGATE_SECRET']}\n`,
    );
    const run = await doctor({ ...env, LABGATE_SECRET: undefined });
    expect(run.byId('client-credentials').status).toBe('ok');
    expect(run.byId('secret').status).toBe('ok');
    expect(run.byId('configuration').detail).toContain(join(dir, '.env'));
  });

  it('--env-file reads the file named', async () => {
    const env = goodEnv();
    const file = join(dir, 'app.env');
    await writeFile(file, `GITLAB_CLIENT_SECRET=${env['GITLAB_CLIENT_SECRET']}\n`);
    const run = await doctor({ ...env, GITLAB_CLIENT_SECRET: undefined }, ['--env-file', file]);
    expect(run.byId('client-credentials').status).toBe('ok');
  });

  it('proxy variables in .env are named: Node never reads them there', async () => {
    await writeFile(join(dir, '.env'), 'HTTP_PROXY=http://proxy.invalid:3128\n');
    const run = await doctor(goodEnv());
    expect(run.byId('proxy')).toMatchObject({ status: 'warn' });
    expect(run.byId('proxy').title).toContain('Node never reads it there');
  });

  it.each([
    [['--frobnicate'], 'labgate doctor: unknown flag --frobnicate (labgate doctor --help lists the flags)\n'],
    [['extra'], 'labgate doctor: unexpected argument extra (labgate doctor --help lists the flags)\n'],
    [
      ['--timeout', 'soon'],
      'labgate doctor: --timeout "soon" is not a duration like 10s or 500ms (at most 10m)\n',
    ],
    [['--env-file'], 'labgate doctor: --env-file needs a value (labgate doctor --help lists the flags)\n'],
    [
      ['--env-file', 'missing.env'],
      `labgate doctor: cannot read the env file ${JSON.stringify('missing.env')} (ENOENT)\n`,
    ],
    [['--signin-user', 'alice'], 'labgate doctor: --signin-user needs --signin\n'],
    [
      ['--signin', '--signin-user', 'alice'],
      'labgate doctor: --signin-user needs the password in LABGATE_DOCTOR_PASSWORD\n',
    ],
  ])('%j: one line on stderr and exit 2', async (args, message) => {
    const run = await doctor(goodEnv(), args, { text: true });
    expect(run.code).toBe(2);
    expect(run.err).toBe(message.replace('"missing.env"', JSON.stringify(join(dir, 'missing.env'))));
    expect(run.out).toBe('');
  });

  it('--help prints the usage and exits 0', async () => {
    const run = await doctor({}, ['--help'], { text: true });
    expect(run.code).toBe(0);
    expect(run.out).toContain('labgate doctor [options]');
  });

  it('--signin signs in for real (scripted as a user) and adds what GitLab answered', async () => {
    const run = await doctor(goodEnv({ LABGATE_DOCTOR_PASSWORD: 'alice-password' }), [
      '--signin',
      '--signin-user',
      'alice',
    ]);
    const signin = run.results.filter((r) => r.id.startsWith('signin-'));
    expect(signin.map((r) => [r.id, r.status])).toEqual(
      expect.arrayContaining([
        ['signin-redirect-uri', 'ok'],
        ['signin-scopes', 'ok'],
        ['signin-user', 'ok'],
      ]),
    );
    expect(run.code).toBe(0);
  });
});

/** Runs the built command in a child process, where NODE_EXTRA_CA_CERTS is read at start. */
async function spawnDoctor(
  args: string[],
  env: Record<string, string | undefined>,
): Promise<{ code: number | null; out: string; err: string }> {
  const cli = fileURLToPath(new URL('../../dist/cli/index.js', import.meta.url));
  const module = fileURLToPath(new URL('../../dist/cli/doctor.js', import.meta.url));
  if (!existsSync(module)) throw new Error('dist/cli/doctor.js is missing: run `npm run build` first');
  const wired = existsSync(cli) && readFileSync(cli, 'utf8').includes('./doctor.js');
  const argv = wired
    ? [cli, 'doctor', ...args]
    : [
        '--input-type=module',
        '-e',
        `const { doctorCommand } = await import(${JSON.stringify(pathToFileURL(module).href)});
         process.exitCode = await doctorCommand(${JSON.stringify(args)});`,
      ];
  const child: ChildProcess = spawn(process.execPath, argv, {
    env: env as NodeJS.ProcessEnv,
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, out, err };
}
