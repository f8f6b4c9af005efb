/**
 * The reference app on Hono: labgate's middleware, and the pages of examples/pages.ts.
 */
import { Hono } from 'hono';
import type { Labgate } from 'labgate';
import { type LabgateEnv, labgate, requireUser } from 'labgate/hono';
import { homePage, profilePage } from '../pages.js';

/**
 * Builds the example app around a labgate instance; serve its `fetch` on any runtime Hono runs on.
 * @example
 * ```ts
 * serve({ fetch: createApp(createLabgate(options)).fetch, port: 3000 });
 * ```
 */
export function createApp(auth: Labgate): Hono<LabgateEnv> {
  const app = new Hono<LabgateEnv>();
  app.use(labgate(auth));

  app.get('/', (c) => c.html(homePage(auth, c.var.labgate.user)));

  app.get('/profile', requireUser(), async (c) => {
    const page = await profilePage(auth, c.var.labgate.session);
    return 'redirect' in page ? c.redirect(page.redirect, 303) : c.html(page.html);
  });

  // A small JSON endpoint (the benchmark's authenticated route).
  app.get('/me', requireUser(), (c) => c.json(c.var.labgate.user));

  return app;
}
