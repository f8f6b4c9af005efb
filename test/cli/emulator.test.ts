/**
 * `labgate emulator` as a user runs it: the built command, a real process, a real port.
 * `npm test` builds first; run `npm run build` before running this file alone.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { normaliseFixtures } from '../../src/emulator/fixtures.js';
import { demoFixtures, type RunningEmulator } from '../../src/emulator/index.js';
import { codeFlow } from '../emulator/browser.js';

const cli = fileURLToPath(new URL('../../dist/cli/index.js', import.meta.url));
const running: ChildProcess[] = [];

beforeAll(() => {
  if (!existsSync(cli)) throw new Error('dist/cli/index.js is missing: run `npm run build` first');
});
afterEach(() => {
  for (const child of running.splice(0)) child.kill('SIGTERM');
});

/** Starts the command and resolves with its output once it prints its URL (or exits). */
function start(
  args: string[],
): Promise<{ url: string | null; output: string; code: number | null; child: ChildProcess }> {
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.push(child);
  let output = '';
  return new Promise((resolve) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening at (http:\/\/\S+)/.exec(output);
      if (match && output.includes('Press Ctrl+C')) resolve({ url: match[1]!, output, code: null, child });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => resolve({ url: null, output, code, child }));
  });
}

describe('labgate emulator', () => {
  // How fast it starts is measured in bench/emulator.mjs, not here: a wall-clock bound in a test
  // fails on a loaded machine without anything being wrong.
  it('starts and prints the URL, users and applications', async () => {
    const { url, output } = await start(['emulator', '--port', '0']);
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(output).toContain('alice');
    expect(output).toContain('alice-password');
    expect(output).toMatch(/client id: +[0-9a-f]{64}/);
    const discovery = (await (await fetch(`${url}/.well-known/openid-configuration`)).json()) as {
      issuer: string;
    };
    expect(discovery.issuer).toBe(url);
  });

  it('serves a full sign-in that a scripted client completes through the HTML forms', async () => {
    const { url } = await start(['emulator', '--port', '0']);
    const model = normaliseFixtures(demoFixtures());
    const gitlab = {
      url,
      applications: model.applications,
      users: model.users,
    } as unknown as RunningEmulator;
    const { tokens } = await codeFlow(gitlab, { user: 'alice', scope: 'openid profile email read_user' });
    const me = await fetch(`${url}/api/v4/user`, {
      headers: { authorization: `Bearer ${tokens.access_token}` },
    });
    expect(((await me.json()) as { username: string }).username).toBe('alice');
  });

  it('expires every access token over its control API, keeping its clock and the refresh tokens', async () => {
    const { url } = await start(['emulator', '--port', '0']);
    const app = normaliseFixtures(demoFixtures()).applications[0]!;
    const control = (path: string, body?: unknown) =>
      fetch(`${url}/-/emulator${path}`, {
        method: body === undefined ? 'GET' : 'POST',
        headers: { 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const me = (token: string) =>
      fetch(`${url}/api/v4/user`, { headers: { authorization: `Bearer ${token}` } });
    const minted = (await (await control('/tokens', { user: 'alice', scopes: ['read_user'] })).json()) as {
      access_token: string;
      refresh_token: string;
    };
    expect((await me(minted.access_token)).status).toBe(200);
    const before = ((await (await control('/clock')).json()) as { now: string }).now;

    const expire = await control('/tokens/expire', {});
    expect(expire.status).toBe(200);
    expect(await expire.json()).toEqual({ expired: 1 });
    const refused = await me(minted.access_token);
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ error: 'invalid_token', error_description: /expired/ });
    // The clock did not move: it still reads the real time (give or take the test's own duration).
    const after = ((await (await control('/clock')).json()) as { now: string }).now;
    expect(Date.parse(after) - Date.parse(before)).toBeLessThan(5_000);
    expect(Math.abs(Date.parse(after) - Date.now())).toBeLessThan(5_000);

    const refreshed = await fetch(`${url}/oauth/token`, {
      method: 'POST',
      body: new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: minted.refresh_token,
        client_id: app.uid,
        client_secret: app.secret,
      }),
    });
    expect(refreshed.status).toBe(200);
    const renewed = (await refreshed.json()) as { access_token: string };
    expect((await me(renewed.access_token)).status).toBe(200);
    // Nothing left to expire but the renewed token.
    expect(await (await control('/tokens/expire', {})).json()).toEqual({ expired: 1 });
    expect(await (await control('/tokens/expire', {})).json()).toEqual({ expired: 0 });
  });

  it('serves under --base-path', async () => {
    const { url } = await start(['emulator', '--port', '0', '--base-path', '/gitlab']);
    expect(url).toMatch(/\/gitlab$/);
    const res = await fetch(`${url}/.well-known/openid-configuration`);
    expect(((await res.json()) as { token_endpoint: string }).token_endpoint).toBe(`${url}/oauth/token`);
  });

  it('stops cleanly on SIGTERM', async () => {
    const { child } = await start(['emulator', '--port', '0']);
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  const refusals: Array<[string, string[], RegExp]> = [
    ['a missing fixture file', ['--fixtures', '/nonexistent/gitlab.json'], /fixture file .* not found/],
    ['a bad port', ['--port', 'eighty'], /not a port number/],
    ['an unknown option', ['--colour', 'blue'], /Unknown option/],
    ['an unknown mode', ['--auto-approve', 'sometimes'], /--auto-approve must be one of page, redirect/],
  ];
  for (const [what, args, message] of refusals) {
    it(`refuses ${what} with a clear message and exit code 2`, async () => {
      const { code, output } = await start(['emulator', '--port', '0', ...args]);
      expect(code).toBe(2);
      expect(output).toMatch(message);
      expect(output).not.toMatch(/\n\s+at /);
    });
  }

  it('refuses an unknown command', async () => {
    const { code, output } = await start(['emulate']);
    expect(code).toBe(2);
    expect(output).toContain('unknown command "emulate"');
  });
});

describe('labgate secret', () => {
  it('prints a fresh 32-byte base64url secret that labgate accepts', async () => {
    const run = () =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, [cli, 'secret'], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout!.on('data', (chunk: Buffer) => {
          out += chunk.toString();
        });
        child.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`exit ${code}`))));
      });
    const [a, b] = await Promise.all([run(), run()]);
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(a).not.toBe(b);
    expect(Buffer.from(a, 'base64url')).toHaveLength(32);
  });
});
