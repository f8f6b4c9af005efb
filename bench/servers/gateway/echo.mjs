/**
 * bench/gateway.mjs: the upstream every proxy forwards to, a plain `node:http` server in its own process
 * answering any request with a small JSON body (about 300 bytes): the method, the target, and the user
 * the proxy in front said it authenticated (`X-Forwarded-User` from labgate's gateway,
 * `OIDC_CLAIM_preferred_username` from mod_auth_openidc; null from the proxies without auth), padded
 * to a fixed length so every proxy carries about the same body.
 */
import { listen, ready } from '../common.mjs';

const { server, origin } = await listen();
// The proxies keep their upstream connections open between runs: a longer idle time than Node's 5 s
// default, so no pooled connection is closed under a proxy that is about to reuse it.
server.keepAliveTimeout = 120_000;
server.on('request', (req, res) => {
  const user = req.headers['x-forwarded-user'] ?? req.headers.oidc_claim_preferred_username ?? null;
  const answer = { method: req.method, url: req.url, user, note: '' };
  answer.note = 'x'.repeat(Math.max(0, 300 - JSON.stringify(answer).length));
  const body = JSON.stringify(answer);
  res.writeHead(200, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
});
ready(server, { origin });
