/**
 * `startGateway`: the gateway's servers (docs/gateway.md, "Operations"): the gateway itself with the
 * timeouts that cut slow clients off, Prometheus metrics on their own address, JSON logs, and a graceful
 * shutdown that lets in-flight requests finish and closes WebSockets with a close frame.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createLabgate, type Labgate, type Store } from '../core/index.js';
import { logText } from '../core/log.js';
import { createAssertions } from './assertion.js';
import type { GatewayConfig } from './config.js';
import { createGateway, type GatewayLogger, type LogFields } from './gateway.js';
import { createMetrics } from './metrics.js';
import { createProxy } from './proxy.js';

/** What {@link startGateway} needs besides the configuration. */
export interface StartGatewayOptions {
  /** The store sessions live in (the command line opens `LABGATE_STORE`). */
  store: Store;
  /** Where JSON log lines go (default: stdout). */
  write?: (line: string) => void;
  /** Inject `fetch` for GitLab (tests). */
  fetch?: typeof fetch;
}

/** A running gateway. */
export interface RunningGateway {
  /** The gateway's own URL (`http://127.0.0.1:4180`). */
  url: string;
  /** The metrics URL, when a metrics address is configured. */
  metricsUrl: string | null;
  /** The labgate instance behind it. */
  labgate: Labgate;
  /** Stops accepting, lets in-flight requests finish (up to the shutdown timeout), closes WebSockets. */
  close(): Promise<void>;
}

/** A logger writing one JSON object a line; every value a client could have sent is escaped. */
export function jsonLogger(write: (line: string) => void): GatewayLogger {
  const line = (level: string, message: string, fields: LogFields = {}) => {
    const out: Record<string, unknown> = {
      time: new Date().toISOString(),
      level,
      msg: logText(message, 500),
    };
    for (const [key, value] of Object.entries(fields))
      out[key] = typeof value === 'string' ? logText(value, 500) : value;
    write(`${JSON.stringify(out)}\n`);
  };
  return {
    info: (message, fields) => line('info', message, fields),
    warn: (message, fields) => line('warn', message, fields),
    error: (message, fields) => line('error', message, fields),
  };
}

function listen(server: Server, host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const address = server.address() as AddressInfo;
      const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      resolve(`http://${shown}:${address.port}`);
    });
  });
}

/**
 * Starts the gateway.
 * @example
 * ```ts
 * const gateway = await startGateway(config, { store: await openStore(process.env.LABGATE_STORE) });
 * process.once('SIGTERM', () => gateway.close());
 * ```
 */
export async function startGateway(
  config: GatewayConfig,
  options: StartGatewayOptions,
): Promise<RunningGateway> {
  const write = options.write ?? ((text: string) => process.stdout.write(text));
  const logger = jsonLogger(write);
  const labgate = createLabgate({
    ...config.labgate,
    prefix: '/oauth2',
    store: options.store,
    ...(options.fetch ? { fetch: options.fetch } : {}),
    logger: {
      info: (message: string) => logger.info(message),
      warn: (message: string) => logger.warn(message),
      error: (message: string) => logger.error(message),
    },
  });
  const secret = (
    typeof config.labgate.secret === 'string' ? config.labgate.secret.split(',') : config.labgate.secret
  )[0]!;
  const assertions = config.assertion
    ? createAssertions(config.assertion, {
        secret: secret.trim(),
        issuer: labgate.options.origin,
        now: Date.now,
      })
    : null;
  const metrics = createMetrics();
  const proxy = createProxy({ upstream: config.upstream, timeout: config.upstreamTimeout });
  const gateway = createGateway({ config, labgate, proxy, metrics, logger, assertions });

  labgate.on('access.denied', (event) => logger.info('access denied', { reason: event.reason }));
  labgate.on('session.created', (event) =>
    logger.info('signed in', { user: event.username, session: event.sessionId }),
  );
  labgate.on('session.ended', (event) =>
    logger.info('session ended', { session: event.sessionId, reason: event.reason }),
  );

  const server = createServer({ requestTimeout: 300_000, headersTimeout: 20_000, keepAliveTimeout: 5_000 });
  server.on('request', gateway.request);
  server.on('upgrade', gateway.upgrade);
  server.on('clientError', (_error, socket: Socket) => {
    if (socket.writable)
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const url = await listen(server, config.listen.host, config.listen.port);

  let metricsServer: Server | null = null;
  let metricsUrl: string | null = null;
  if (config.metricsAddress) {
    metricsServer = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(metrics.render());
    });
    metricsUrl = `${await listen(metricsServer, config.metricsAddress.host, config.metricsAddress.port)}/metrics`;
  }
  logger.info('gateway listening', { url, upstream: config.upstream.origin, public: labgate.options.origin });

  let closing: Promise<void> | undefined;
  async function close(): Promise<void> {
    closing ??= (async () => {
      logger.info('gateway shutting down');
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      // A keep-alive connection goes idle once its request in flight is answered: close it then.
      const idle = setInterval(() => server.closeIdleConnections(), 50);
      server.closeIdleConnections();
      gateway.closeTunnels();
      const timer = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, config.shutdownTimeout);
      timer.unref();
      await stopped;
      clearInterval(idle);
      clearTimeout(timer);
      proxy.close();
      if (metricsServer) await new Promise<void>((resolve) => metricsServer!.close(() => resolve()));
    })();
    return closing;
  }

  return { url, metricsUrl, labgate, close };
}
