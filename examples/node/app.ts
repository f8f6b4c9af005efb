/**
 * The reference app on plain node:http: one fetch handler that lets labgate answer its routes, finds
 * the session, and guards the pages with the core's guards (the same rules every host uses).
 */
import type { Labgate, Session } from 'labgate';
import { createNodeListener } from 'labgate/node';
import { homePage, profilePage } from '../pages.js';

const html = (body: string, status = 200) =>
  new Response(body, { status, headers: { 'content-type': 'text/html; charset=utf-8' } });

/**
 * Builds the example app around a labgate instance: a `node:http` request listener.
 * @example
 * ```ts
 * createServer(createApp(auth)).listen(3000);
 * ```
 */
export function createApp(auth: Labgate) {
  const signedIn = auth.guard();
  return createNodeListener(
    async (request) => {
      const own = await auth.handle(request);
      if (own) return own;
      const url = new URL(request.url);
      let session: Session | null;
      try {
        session = await auth.getSession(request);
      } catch (error) {
        return auth.errorResponse(error, request); // the store is down: 503
      }
      if (url.pathname === '/') return html(homePage(auth, session?.user ?? null));
      if (url.pathname !== '/profile' && url.pathname !== '/me') return null; // 404
      const refused = await signedIn.check({
        method: request.method,
        target: `${url.pathname}${url.search}`,
        accept: request.headers.get('accept'),
        secFetchMode: request.headers.get('sec-fetch-mode'),
        session,
      });
      if (refused) return refused; // a redirect to sign in, or 401
      if (url.pathname === '/me') return Response.json(session!.user);
      const page = await profilePage(auth, session!);
      return 'redirect' in page ? Response.redirect(new URL(page.redirect, url), 303) : html(page.html);
    },
    { origin: auth.options.origin },
  );
}
