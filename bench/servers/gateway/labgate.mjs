/**
 * bench/gateway.mjs: labgate's gateway (`startGateway` from the built dist/gateway/server.js) in front
 * of the upstream (`BENCH_UPSTREAM`), configured as the gateway's tests configure it (every option at
 * its default, test/gateway/harness.ts `baseConfig`), the emulator's first application, sessions in a
 * MemoryStore. Its log lines go to stderr (the gateway writes none per proxied request).
 */
import { createServer } from 'node:net';
import { MemoryStore } from '../../../dist/core/index.js';
import { startGateway } from '../../../dist/gateway/server.js';
import { ready } from '../common.mjs';

/** A free loopback port: the gateway's public URL must name its port before it listens. */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const config = {
  labgate: {
    gitlabUrl: process.env.GITLAB_URL,
    clientId: process.env.GITLAB_CLIENT_ID,
    clientSecret: process.env.GITLAB_CLIENT_SECRET,
    url,
    secret: process.env.LABGATE_SECRET,
    scopes: 'openid profile email read_api',
  },
  store: 'memory:',
  upstream: new URL(process.env.BENCH_UPSTREAM),
  listen: { host: '127.0.0.1', port },
  metricsAddress: null,
  routes: [],
  skipRoutes: [],
  skipPrefixes: [],
  apiRoutes: [],
  emailDomains: null,
  reverseProxy: false,
  trustedProxies: ['127.0.0.1/32', '::1/128'],
  whitelistDomains: [],
  setXAuthRequest: false,
  passAccessToken: false,
  passUserHeaders: true,
  preferEmailToUser: false,
  skipAuthPreflight: false,
  forceJsonErrors: false,
  assertion: null,
  websocketOrigins: [url],
  upstreamTimeout: 30_000,
  shutdownTimeout: 2000,
  skipProviderButton: false,
};
const gateway = await startGateway(config, {
  store: new MemoryStore(),
  write: (line) => process.stderr.write(line),
});
ready(
  { close: () => void gateway.close() },
  { origin: gateway.url, cookieName: gateway.labgate.options.cookieName },
);
