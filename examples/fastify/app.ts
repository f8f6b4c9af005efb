/**
 * The reference app on Fastify: labgate's plugin, and the pages of examples/pages.ts.
 */
import Fastify, { type FastifyInstance, type FastifyServerFactory } from 'fastify';
import type { Labgate } from 'labgate';
import { labgate, requireUser } from 'labgate/fastify';
import { homePage, profilePage } from '../pages.js';

const HTML = 'text/html; charset=utf-8';

/**
 * Builds the example app around a labgate instance (not yet listening).
 * @example
 * ```ts
 * const app = await createApp(createLabgate(options));
 * await app.listen({ port: 3000 });
 * ```
 */
export async function createApp(
  auth: Labgate,
  options: { serverFactory?: FastifyServerFactory } = {},
): Promise<FastifyInstance> {
  const app = Fastify(options.serverFactory ? { serverFactory: options.serverFactory } : {});
  await app.register(labgate, { labgate: auth });

  app.get('/', async (request, reply) =>
    reply.type(HTML).send(homePage(auth, request.labgate?.user ?? null)),
  );

  app.get('/profile', { preHandler: requireUser() }, async (request, reply) => {
    const page = await profilePage(auth, request.labgate!.session!);
    return 'redirect' in page ? reply.redirect(page.redirect, 303) : reply.type(HTML).send(page.html);
  });

  // A small JSON endpoint (the benchmark's authenticated route).
  app.get('/me', { preHandler: requireUser() }, async (request) => request.labgate!.user);

  return app;
}
