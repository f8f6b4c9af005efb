/**
 * The emulator's server against slow and idle clients: `requestTimeout`, `headersTimeout` and
 * `keepAliveTimeout`, driven over raw sockets so the client's pace is the test's to choose.
 */
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createEmulatorServer,
  DEFAULT_TIMEOUTS,
  type RunningEmulator,
  startEmulator,
} from '../../src/emulator/index.js';

const running: RunningEmulator[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((gitlab) => gitlab.close()));
});

async function start(options: Parameters<typeof startEmulator>[0]): Promise<RunningEmulator> {
  const gitlab = await startEmulator(options);
  running.push(gitlab);
  return gitlab;
}

interface Conversation {
  socket: Socket;
  /** Everything the server sent so far. */
  received(): string;
  /** Resolves with the time the server closed the connection. */
  closed: Promise<number>;
}

async function open(url: string): Promise<Conversation> {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let data = '';
  socket.on('data', (chunk: Buffer) => {
    data += chunk.toString('latin1');
  });
  const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(performance.now())));
  return { socket, received: () => data, closed };
}

/** `promise`, or a failure once `ms` have passed without it settling. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

/** Resolves once `check` holds, polling every few milliseconds, or fails after `withinMs`. */
async function until(check: () => boolean, withinMs: number): Promise<void> {
  const deadline = performance.now() + withinMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('server timeouts', () => {
  it('sets sane defaults on every server it builds', () => {
    const { server } = createEmulatorServer();
    expect(DEFAULT_TIMEOUTS).toEqual({
      requestTimeout: 30_000,
      headersTimeout: 10_000,
      keepAliveTimeout: 5_000,
    });
    expect(server.requestTimeout).toBe(30_000);
    expect(server.headersTimeout).toBe(10_000);
    expect(server.keepAliveTimeout).toBe(5_000);
  });

  it('takes its timeouts from the options, a default headers limit giving way to a shorter request limit', () => {
    const custom = createEmulatorServer({
      requestTimeout: 2_000,
      headersTimeout: 1_000,
      keepAliveTimeout: 300,
    });
    expect(custom.server.requestTimeout).toBe(2_000);
    expect(custom.server.headersTimeout).toBe(1_000);
    expect(custom.server.keepAliveTimeout).toBe(300);
    expect(createEmulatorServer({ requestTimeout: 500 }).server.headersTimeout).toBe(500);
    expect(createEmulatorServer({ requestTimeout: 0 }).server.requestTimeout).toBe(0);
  });

  it('refuses timeouts that are not whole milliseconds, or a headers limit above the request limit', () => {
    expect(() => createEmulatorServer({ requestTimeout: -1 })).toThrow(TypeError);
    expect(() => createEmulatorServer({ keepAliveTimeout: 1.5 })).toThrow(
      'keepAliveTimeout must be a whole number of milliseconds',
    );
    expect(() => createEmulatorServer({ headersTimeout: Number.NaN })).toThrow(TypeError);
    expect(() => createEmulatorServer({ requestTimeout: 1_000, headersTimeout: 2_000 })).toThrow(
      'headersTimeout (2000) must not exceed requestTimeout (1000)',
    );
  });

  it('cuts off a body sent one byte at a time at requestTimeout, with a 408', async () => {
    const requestTimeout = 500;
    const gitlab = await start({ requestTimeout });
    const { socket, received, closed } = await open(gitlab.url);
    const started = performance.now();
    socket.write(
      'POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n' +
        'Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n',
    );
    // The slow client: one byte every 20 ms, far short of the 1000 announced before the limit.
    const trickle = setInterval(() => {
      if (!socket.destroyed) socket.write('a');
    }, 20);
    try {
      const at = await within(closed, requestTimeout + 2_000, 'the server closing the slow request');
      expect(at - started).toBeGreaterThanOrEqual(requestTimeout - 20);
      expect(at - started).toBeLessThan(requestTimeout + 2_000);
    } finally {
      clearInterval(trickle);
    }
    expect(received()).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    // The cut-off request is logged as a client error, never as an internal one.
    await until(() => gitlab.control.requests({ path: '/oauth/token' }).some((r) => r.status !== 0), 1_000);
    expect(gitlab.control.requests({ path: '/oauth/token' }).map((r) => r.status)).toEqual([400]);
  });

  it('cuts off headers sent one byte at a time at headersTimeout', async () => {
    const headersTimeout = 300;
    const gitlab = await start({ requestTimeout: 5_000, headersTimeout });
    const { socket, received, closed } = await open(gitlab.url);
    const started = performance.now();
    const head = `GET /oauth/discovery/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ${'x'.repeat(500)}`;
    let sent = 0;
    const trickle = setInterval(() => {
      if (!socket.destroyed && sent < head.length) socket.write(head[sent++]!);
    }, 10);
    try {
      const at = await within(closed, headersTimeout + 2_000, 'the server closing the slow headers');
      expect(at - started).toBeGreaterThanOrEqual(headersTimeout - 20);
    } finally {
      clearInterval(trickle);
    }
    expect(received()).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
  });

  it('still serves a client that sends its body in time', async () => {
    const gitlab = await start({ requestTimeout: 500 });
    const res = await fetch(`${gitlab.url}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=refresh_token',
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('invalid_request');
  });

  it('closes an idle keep-alive connection after keepAliveTimeout', async () => {
    const keepAliveTimeout = 300;
    const gitlab = await start({ keepAliveTimeout });
    const { socket, received, closed } = await open(gitlab.url);
    socket.write('GET /oauth/discovery/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n');
    await until(() => /\r\n\r\n\{"keys":\[.*\]\}$/s.test(received()), 2_000);
    const answered = performance.now();
    expect(received()).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(received()).toMatch(/\r\nConnection: keep-alive\r\n/i);
    // Node closes an idle connection a second after the `Keep-Alive: timeout` it advertises, so that
    // clients trusting the header never reuse a connection the server is closing; the default (5 s)
    // would close it only after 6 s.
    const margin = 1_000;
    const at = await within(
      closed,
      keepAliveTimeout + margin + 1_500,
      'the server closing the idle connection',
    );
    expect(at - answered).toBeGreaterThanOrEqual(keepAliveTimeout - 50);
    expect(at - answered).toBeLessThan(keepAliveTimeout + margin + 1_500);
  });
});
