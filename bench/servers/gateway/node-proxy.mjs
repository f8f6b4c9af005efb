/**
 * bench/gateway.mjs: the anchor of labgate's gateway, a bare reverse proxy in Node: a `node:http`
 * server that forwards every request with `http.request` over a keep-alive `http.Agent` to the
 * upstream (`BENCH_UPSTREAM`), streams the body both ways and copies the status and headers back.
 * No authentication, no header rules: what proxying alone costs in Node.
 */
import http from 'node:http';
import { listen, ready } from '../common.mjs';

const upstream = new URL(process.env.BENCH_UPSTREAM);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
const { server, origin } = await listen();
server.on('request', (req, res) => {
  const outgoing = http.request(
    {
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers: { ...req.headers, host: upstream.host },
      agent,
    },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    },
  );
  outgoing.once('error', () => {
    if (!res.headersSent) res.writeHead(502).end();
    else res.destroy();
  });
  req.pipe(outgoing);
});
ready(server, { origin });
