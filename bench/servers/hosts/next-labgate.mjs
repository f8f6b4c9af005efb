/**
 * bench/hosts.mjs: a Next.js app on labgate/next, built beforehand by bench/hosts.mjs
 * (BENCH_NEXT_DIR): `app/me/route.js` is `requireUser(auth, …, { api: true })`, labgate's routes the
 * catch-all `handlers(auth)`. Served as examples/next/server.ts serves it: Next's custom-server API
 * behind `wrapRequestHandler`, the process's labgate (MemoryStore) on `globalThis` for the routes.
 */
import { createLabgate, MemoryStore } from 'labgate';
import { wrapRequestHandler } from 'labgate/next';
import next from 'next';
import { labgateOptions, listen, ready } from '../common.mjs';

const { server, origin } = await listen();
const port = server.address().port;
const auth = createLabgate({ ...labgateOptions(origin), store: new MemoryStore() });
globalThis[Symbol.for('labgate.bench.next')] = auth;
const app = next({ dev: false, dir: process.env.BENCH_NEXT_DIR, hostname: '127.0.0.1', port });
await app.prepare();
const handle = wrapRequestHandler(auth, app.getRequestHandler());
server.on('request', (req, res) => void handle(req, res));
ready(server, { origin, cookieName: 'labgate' });
