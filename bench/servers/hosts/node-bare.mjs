/** bench/hosts.mjs: bare `node:http`, `/me` returns a fixed user (no authentication at all). */
import { ALICE, listen, ready } from '../common.mjs';

const { server, origin } = await listen();
server.on('request', (req, res) => {
  if (req.url !== '/me') {
    res.writeHead(404).end();
    return;
  }
  const body = JSON.stringify(ALICE);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
ready(server, { origin });
