/**
 * What every contestant server shares: the user shape `/me` answers, the 401 body, listening on a
 * free loopback port, and the handshake with bench/me.mjs (one `READY {json}` line on stdout).
 * A server exits on SIGTERM/SIGINT through process.exit, so `--cpu-prof` writes its profile.
 */
import { createServer } from 'node:http';

/** The fields every contestant's `/me` returns. */
export function publicUser(user) {
  return { id: user.id, username: user.username, name: user.name, email: user.email };
}

/** The fixed user of the bare Express anchor (Alice of the emulator's demo fixtures). */
export const ALICE = { id: 1, username: 'alice', name: 'Alice Liddell', email: 'alice@acme.test' };

export function unauthorized(res) {
  res.status(401).json({ error: 'session_required' });
}

/** The `createLabgate` options every labgate process of the bench shares (GitLab app and secret from env). */
export function labgateOptions(origin) {
  return {
    gitlabUrl: process.env.GITLAB_URL,
    clientId: process.env.GITLAB_CLIENT_ID,
    clientSecret: process.env.GITLAB_CLIENT_SECRET,
    url: origin,
    secret: process.env.LABGATE_SECRET,
    logger: false,
  };
}

/** Listens on 127.0.0.1 with a free port; returns the server and its origin. */
export async function listen() {
  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/** Tells the bench the server is ready (and anything else it needs), and exits cleanly on a signal. */
export function ready(server, info) {
  const stop = () => {
    server.closeAllConnections?.();
    server.close();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  // The bench's own watchdog: a server never outlives it by more than this, even if orphaned.
  const limit = Number(process.env.BENCH_SERVER_LIFETIME_MS ?? 15 * 60_000);
  setTimeout(stop, limit).unref();
  process.stdout.write(`READY ${JSON.stringify(info)}\n`);
}
