/**
 * bench/hosts.mjs: a Next.js app whose `app/me/route.js` returns a fixed user (no authentication),
 * built beforehand by bench/hosts.mjs (BENCH_NEXT_DIR), served by Next's custom-server API.
 */
import next from 'next';
import { listen, ready } from '../common.mjs';

const { server, origin } = await listen();
const port = server.address().port;
const app = next({ dev: false, dir: process.env.BENCH_NEXT_DIR, hostname: '127.0.0.1', port });
await app.prepare();
const handle = app.getRequestHandler();
server.on('request', (req, res) => void handle(req, res));
ready(server, { origin });
