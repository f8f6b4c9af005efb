/**
 * The reference app on Express: labgate's middleware, and the pages of examples/pages.ts.
 */
import express from 'express';
import type { Labgate } from 'labgate';
import { labgate as mountLabgate, requireUser } from 'labgate/express';
import { homePage, profilePage } from '../pages.js';

/**
 * Builds the example app around a labgate instance.
 * @example
 * ```ts
 * createApp(createLabgate(options)).listen(3000);
 * ```
 */
export function createApp(auth: Labgate): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(mountLabgate(auth));

  app.get('/', (req, res) => {
    res.type('html').send(homePage(auth, req.labgate?.user ?? null));
  });

  app.get('/profile', requireUser(), async (req, res) => {
    const page = await profilePage(auth, req.labgate!.session!);
    if ('redirect' in page) res.redirect(303, page.redirect);
    else res.type('html').send(page.html);
  });

  // A small JSON endpoint (the benchmark's authenticated route).
  app.get('/me', requireUser(), (req, res) => {
    res.json(req.labgate!.user);
  });

  return app;
}
