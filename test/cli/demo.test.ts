/**
 * `npm start` as a new user runs it: the built demo (examples/demo.ts) starts the GitLab emulator and
 * the example app on SQLite, prints where to go, and a sign-in through it reaches the profile page;
 * its data folder and files are the owner's alone; and its server cuts off slow clients.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import type { Server } from 'node:http';
import { type AddressInfo, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startExampleApp } from '../../examples/express/server.js';
import { MemoryStore } from '../../src/core/index.js';
import { Browser, formWith } from '../emulator/browser.js';

const demo = fileURLToPath(new URL('../../build/examples/demo.js', import.meta.url));
let child: ChildProcess | undefined;
let data: string;

/** The permission bits of a file or folder. */
function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

beforeAll(() => {
  if (!existsSync(demo)) throw new Error('build/examples/demo.js is missing: run `npm run build` first');
  data = mkdtempSync(join(tmpdir(), 'labgate-demo-'));
});
afterAll(() => {
  child?.kill('SIGTERM');
  rmSync(data, { recursive: true, force: true });
});

describe('npm start (the demo)', () => {
  it('prints the app URL and the demo user, and signs in to the profile page on SQLite', async () => {
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    // A data folder the demo makes itself, under the most permissive umask.
    const state = join(data, 'state');
    const { LABGATE_STORE: _store, LABGATE_SECRET: _secret, ...inherited } = process.env;
    child = spawn('/bin/sh', ['-c', 'umask 000 && exec "$0" "$1"', process.execPath, demo], {
      env: {
        ...inherited,
        PORT: String(port),
        LABGATE_URL: origin,
        EMULATOR_PORT: '0',
        LABGATE_DATA: state,
        GITLAB_URL: '',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    await new Promise<void>((resolve, reject) => {
      child!.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('Press Ctrl+C')) resolve();
      });
      child!.stderr!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
      });
      child!.on('exit', (code) => reject(new Error(`demo exited with ${code}:\n${output}`)));
    });
    expect(output).toContain(`open ${origin}`);
    expect(output).toContain('alice / alice-password');
    const gitlabUrl = /GitLab \(emulated\) at (http:\/\/\S+): sign in/.exec(output)![1]!;

    const browser = new Browser();
    const home = await browser.get(`${origin}/`);
    expect(home.body).toContain('Sign in with GitLab');
    const start = await browser.get(`${origin}/auth/login?returnTo=/profile`);
    const outcome = await browser.signInAndAuthorize({
      url: gitlabUrl,
      authorizeUrl: start.location!,
      login: 'alice',
      password: 'alice-password',
    });
    expect(outcome.kind).toBe('consent');
    const approved = await browser.submit(
      formWith((outcome as { page: Parameters<typeof formWith>[0] }).page, {
        testId: 'authorization-button',
      }),
    );
    const callback = await browser.get(approved.location!);
    expect(callback.status).toBe(303);
    const profile = await browser.get(callback.location!);
    expect(profile.body).toContain('Alice Liddell');
    // Sessions and the secret are the owner's alone: the folder 0700, its files 0600 (the -wal and
    // -shm files exist while the demo has the database open).
    expect(mode(state)).toBe(0o700);
    for (const file of ['secret', 'labgate.db', 'labgate.db-wal', 'labgate.db-shm'])
      expect([file, mode(join(state, file))]).toEqual([file, 0o600]);
  });
});

describe('LABGATE_EXAMPLE', () => {
  /** Runs the built demo until it is up (or exits); its output. */
  async function runDemo(example: string): Promise<{ output: string; code: number | null }> {
    const port = await freePort();
    const { LABGATE_STORE: _store, LABGATE_SECRET: _secret, ...inherited } = process.env;
    const run = spawn(process.execPath, [demo], {
      env: {
        ...inherited,
        PORT: String(port),
        LABGATE_URL: `http://127.0.0.1:${port}`,
        EMULATOR_PORT: '0',
        LABGATE_DATA: join(data, `example-${example}`),
        LABGATE_EXAMPLE: example,
        GITLAB_URL: '',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    try {
      return await new Promise((resolve) => {
        const collect = (chunk: Buffer) => {
          output += chunk.toString();
          if (output.includes('Press Ctrl+C')) resolve({ output, code: null });
        };
        run.stdout!.on('data', collect);
        run.stderr!.on('data', collect);
        run.on('exit', (code) => resolve({ output, code }));
      });
    } finally {
      run.kill('SIGTERM');
    }
  }

  it('starts the reference app on the host it names, and says which', async () => {
    const { output } = await runDemo('hono');
    expect(output).toContain('labgate demo (hono): open http://127.0.0.1:');
  });

  it('refuses a host it does not know, in one line, before starting anything', async () => {
    const { output, code } = await runDemo('rails');
    expect(code).toBe(1);
    expect(output.trim()).toBe(
      'labgate demo: LABGATE_EXAMPLE must be one of express, fastify, hono, next, node (it is "rails")',
    );
  });
});

describe("the demo app's server", () => {
  const env = {
    GITLAB_URL: 'http://127.0.0.1:9',
    GITLAB_CLIENT_ID: 'demo',
    GITLAB_CLIENT_SECRET: 'demo-secret',
    LABGATE_URL: 'http://127.0.0.1:3000',
    LABGATE_SECRET: randomBytes(32).toString('base64url'),
    PORT: '0',
  };
  const servers: Server[] = [];
  afterAll(async () => {
    for (const server of servers) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('bounds slow clients by default: headers 10 s, whole request 30 s, idle keep-alive 5 s', async () => {
    const { server } = await startExampleApp(env, { store: new MemoryStore(), logger: false });
    servers.push(server);
    expect(server.headersTimeout).toBe(10_000);
    expect(server.requestTimeout).toBe(30_000);
    expect(server.keepAliveTimeout).toBe(5_000);
  });

  it('cuts off a body sent one byte at a time at requestTimeout', async () => {
    const requestTimeout = 300;
    const { server } = await startExampleApp(
      env,
      { store: new MemoryStore(), logger: false },
      { requestTimeout },
    );
    servers.push(server);
    const { port } = server.address() as AddressInfo;
    const socket = connect(port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    const started = performance.now();
    const length = 1_000;
    socket.write(
      `POST /auth/logout HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: ${env.LABGATE_URL}\r\n` +
        `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${length}\r\n\r\n`,
    );
    let sent = 0;
    // The slow client: one byte every 10 ms, 10 s for the whole body if nothing cut it off.
    const trickle = setInterval(() => {
      if (!socket.destroyed && socket.writable) socket.write('a', () => undefined);
      sent++;
    }, 10);
    let answer = '';
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString();
    });
    socket.on('error', () => undefined);
    try {
      // Bounded: with Node's default (300 s) the socket would stay open and this would reject.
      await once(socket, 'close', { signal: AbortSignal.timeout(3_000) }).catch(() => {
        throw new Error(`the server had not cut off the slow request after 3 s (${answer || 'no answer'})`);
      });
    } finally {
      clearInterval(trickle);
      socket.destroy();
    }
    const elapsed = performance.now() - started;
    expect(answer).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(sent).toBeLessThan(length);
    // Cut at the limit (Node checks it every 60 ms here), not before it.
    expect(elapsed).toBeGreaterThanOrEqual(requestTimeout - 20);
    expect(elapsed).toBeLessThan(2_000);
  });
});
