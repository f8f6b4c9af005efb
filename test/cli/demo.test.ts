/**
 * `npm start` as a new user runs it: the built demo (examples/demo.ts) starts the GitLab emulator and
 * the example app on SQLite, prints where to go, and a sign-in through it reaches the profile page.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, formWith } from '../emulator/browser.js';

const demo = fileURLToPath(new URL('../../build/examples/demo.js', import.meta.url));
let child: ChildProcess | undefined;
let data: string;

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
    child = spawn(process.execPath, [demo], {
      env: {
        ...process.env,
        PORT: String(port),
        LABGATE_URL: origin,
        EMULATOR_PORT: '0',
        LABGATE_DATA: data,
        LABGATE_STORE: `sqlite:${join(data, 'labgate.db')}`,
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
    expect(existsSync(join(data, 'labgate.db'))).toBe(true);
    expect(existsSync(join(data, 'secret'))).toBe(true);
  });
});
