/**
 * `npm start`: the demo. Starts the GitLab emulator with the demo fixtures and the example app signed
 * in through it, then prints where to go and how to sign in. With GITLAB_URL, GITLAB_CLIENT_ID and
 * GITLAB_CLIENT_SECRET set, the same app signs in against that GitLab instead.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { createRequire } from 'node:module';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { demoFixtures, type RunningEmulator, startEmulator } from 'labgate/emulator';
import type { Env } from './serve.js';

/** The reference app on each host (`LABGATE_EXAMPLE`), loaded only when chosen. */
const HOSTS: Record<
  string,
  () => Promise<{ startExampleApp(env: Env): Promise<{ server: Server; url: string }> }>
> = {
  express: () => import('./express/server.js'),
  fastify: () => import('./fastify/server.js'),
  hono: () => import('./hono/server.js'),
  next: async () => {
    buildNextApp();
    return import('./next/server.js');
  },
  node: () => import('./node/server.js'),
};

/** The Next.js example runs from its build: `next build examples/next` once, when there is none. */
function buildNextApp(): void {
  const project = fileURLToPath(new URL('../../examples/next/', import.meta.url));
  if (existsSync(join(project, '.next', 'BUILD_ID'))) return;
  process.stdout.write('  labgate demo: building the Next.js example once (next build examples/next)…\n');
  const nextBin = createRequire(import.meta.url).resolve('next/dist/bin/next');
  const built = spawnSync(process.execPath, [nextBin, 'build', project], {
    stdio: 'inherit',
    env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1', NODE_ENV: 'production' },
  });
  if (built.status !== 0) throw new Error('next build examples/next failed');
}

const DATA = process.env['LABGATE_DATA'] ?? '.labgate';

/**
 * Creates the data folder (and any missing folder above it) `0700`, whatever the umask: it holds the
 * secret and the sessions. A folder that already exists is the user's and keeps its mode.
 */
function createDataFolder(): void {
  const first = mkdirSync(DATA, { recursive: true, mode: 0o700 });
  if (first === undefined) return;
  let folder = first;
  chmodSync(folder, 0o700);
  for (const part of relative(first, DATA).split(sep).filter(Boolean)) {
    folder = join(folder, part);
    chmodSync(folder, 0o700);
  }
}

/** The demo's secret: made once and kept in the data folder (never a fixed default). */
function demoSecret(): string {
  const file = join(DATA, 'secret');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const secret = randomBytes(32).toString('base64url');
  writeFileSync(file, `${secret}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return secret;
}

async function startDemoGitLab(appUrl: string): Promise<RunningEmulator> {
  const fixtures = demoFixtures();
  const app = fixtures.applications![0]!;
  const callback = `${appUrl}/auth/callback`;
  if (!app.redirectUris.includes(callback)) app.redirectUris.push(callback);
  const port = Number(process.env['EMULATOR_PORT'] ?? 3999);
  try {
    return await startEmulator({ port, fixtures });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    return startEmulator({ port: 0, fixtures });
  }
}

async function main(): Promise<void> {
  const env = { ...process.env };
  // Checked before anything starts: a wrong name is a one-line error, not a half-started demo.
  const host = env['LABGATE_EXAMPLE'] || 'express';
  const load = HOSTS[host];
  if (!load) {
    throw new Error(`LABGATE_EXAMPLE must be one of ${Object.keys(HOSTS).join(', ')} (it is "${host}")`);
  }
  const port = Number(env['PORT'] ?? 3000);
  env['PORT'] = String(port);
  env['LABGATE_URL'] ??= `http://localhost:${port}`;
  if (!env['LABGATE_SECRET'] || !env['LABGATE_STORE']) createDataFolder();
  env['LABGATE_SECRET'] ||= demoSecret();
  env['LABGATE_STORE'] ||= `sqlite:${join(DATA, 'labgate.db')}`;
  let gitlab: RunningEmulator | undefined;
  if (!env['GITLAB_URL']) {
    gitlab = await startDemoGitLab(env['LABGATE_URL']);
    const app = gitlab.applications[0]!;
    env['GITLAB_URL'] = gitlab.url;
    env['GITLAB_CLIENT_ID'] = app.uid;
    env['GITLAB_CLIENT_SECRET'] = app.secret;
  } else if (!env['GITLAB_CLIENT_ID']) {
    throw new Error(
      'GITLAB_URL is set: set GITLAB_CLIENT_ID and GITLAB_CLIENT_SECRET too (see `npx labgate doctor`)',
    );
  }
  const { server, url } = await (await load()).startExampleApp(env);
  const lines = [
    '',
    `  labgate demo (${host}): open ${url}`,
    '',
    gitlab
      ? `  GitLab (emulated) at ${gitlab.url}: sign in as alice / alice-password\n  (also bob, grace, erin: <name>-password; carol has 2FA, recovery code 3f4a1c9e2b7d8a60)`
      : `  GitLab at ${env['GITLAB_URL']}`,
    '',
    '  Press Ctrl+C to stop.',
    '',
  ];
  process.stdout.write(lines.join('\n'));
  const stop = async () => {
    server.close();
    server.closeAllConnections();
    await gitlab?.close();
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}

main().catch((error: unknown) => {
  process.stderr.write(`labgate demo: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
