/**
 * The reference app on every host (`examples/<host>`, what `LABGATE_EXAMPLE=<host> npm start` runs),
 * each started by its own `startExampleApp` from the same environment, signed in through the
 * emulator's pages in a real browser: home, sign-in, consent, the profile with the projects read with
 * the user's token, sign-out.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { MemoryStore } from 'labgate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { launchChromium, skipBrowserTests } from './browser.js';
import { authorize, enterPassword, listedProjects, openGitLabSignIn, SCOPES, text } from './stack.js';

type Start = (
  env: Record<string, string | undefined>,
  overrides: { store: MemoryStore; logger: false },
) => Promise<{ server: Server; url: string }>;

const HOSTS: Record<string, () => Promise<{ startExampleApp: Start }>> = {
  express: () => import('../../examples/express/server.js'),
  fastify: () => import('../../examples/fastify/server.js'),
  hono: () => import('../../examples/hono/server.js'),
  node: () => import('../../examples/node/server.js'),
};

/** A loopback port nothing listens on now. */
async function freePort(): Promise<number> {
  const probe = createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

describe.skipIf(skipBrowserTests)('the reference app on every host (chromium)', { timeout: 60_000 }, () => {
  let gitlab: RunningEmulator;
  beforeAll(async () => {
    gitlab = await startEmulator();
  });
  afterAll(() => gitlab?.close());

  it.each(Object.keys(HOSTS))(
    '%s: signs alice in, shows her profile and projects, signs out',
    async (host) => {
      gitlab.control.reset();
      const port = await freePort();
      const app = gitlab.applications[0]!;
      const { startExampleApp } = await HOSTS[host]!();
      const { server, url } = await startExampleApp(
        {
          GITLAB_URL: gitlab.url,
          GITLAB_CLIENT_ID: app.uid,
          GITLAB_CLIENT_SECRET: app.secret,
          GITLAB_SCOPES: SCOPES,
          LABGATE_URL: `http://127.0.0.1:${port}`,
          LABGATE_SECRET: randomBytes(32).toString('base64url'),
          PORT: String(port),
          HOST: '127.0.0.1',
        },
        { store: new MemoryStore(), logger: false },
      );
      const browser = await launchChromium();
      try {
        const stack = { gitlab, origin: url };
        const { page } = browser;
        await openGitLabSignIn(page, { ...stack, close: async () => {} });
        await enterPassword(page, 'alice');
        await authorize(page, { ...stack, close: async () => {} });
        expect(await text(page, 'name')).toBe('Alice Liddell');
        expect(await listedProjects(page)).toContain('Acme / App');
        await page.getByRole('button', { name: 'Sign out' }).click();
        await page.waitForURL(`${url}/`);
        expect(await text(page, 'sign-in')).toBe('Sign in with GitLab');
        expect(gitlab.control.requests({ path: '/oauth/revoke' })).toHaveLength(1);
      } finally {
        await browser.close();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
      }
    },
  );
});
