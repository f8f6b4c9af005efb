/**
 * The WebSocket tunnels the gateway holds open, by session (docs/security.md, GATEWAY-11): each closes,
 * with a close frame to the client, when its session ends — signed out in this process (at once),
 * ended by another instance or re-checked away (within the watch's 2 s), or at its absolute expiry —
 * and all of them at shutdown (1001, going away).
 */
import type { Duplex } from 'node:stream';
import type { Labgate, Session } from '../core/index.js';
import type { Tunnel } from './proxy.js';

/** The open tunnels of one gateway. */
export interface Tunnels {
  /** Keeps a tunnel until it closes or its session ends. */
  add(session: Session, cookie: string | undefined, tunnel: Tunnel, socket: Duplex): void;
  /** Closes every tunnel (1001) and stops watching. */
  closeAll(): void;
}

interface Open {
  tunnel: Tunnel;
  socket: Duplex;
  cookie: string | undefined;
  timer: NodeJS.Timeout;
}

const GOING_AWAY = 1001;
const SESSION_ENDED = 1008;

/** Creates the registry for a labgate instance. */
export function createTunnels(labgate: Labgate): Tunnels {
  const tunnels = new Map<string, Set<Open>>();
  let watch: NodeJS.Timeout | undefined;

  function close(open: Open, sessionId: string, code: number): void {
    clearTimeout(open.timer);
    const set = tunnels.get(sessionId);
    set?.delete(open);
    if (set?.size === 0) tunnels.delete(sessionId);
    // A close frame first, then both sides end.
    if (!open.socket.destroyed) open.socket.write(Buffer.from([0x88, 0x02, code >> 8, code & 0xff]));
    open.tunnel.close();
  }

  labgate.on('session.ended', ({ sessionId }) => {
    for (const open of [...(tunnels.get(sessionId) ?? [])]) close(open, sessionId, SESSION_ENDED);
  });

  /** Asks for each tunnel's session again: what another instance ended, or a re-check refused. */
  function startWatch(): void {
    if (watch) return;
    watch = setInterval(() => {
      for (const [sessionId, opens] of tunnels) {
        for (const open of [...opens]) {
          Promise.resolve(labgate.sessionOf(open.cookie)).then(
            (session) => {
              if (!session || session.id !== sessionId) close(open, sessionId, SESSION_ENDED);
            },
            // The store is down: keep the tunnel, as requests keep their session's last answer.
            () => {},
          );
        }
      }
      if (tunnels.size === 0 && watch) {
        clearInterval(watch);
        watch = undefined;
      }
    }, 2000);
    watch.unref();
  }

  return {
    add(session, cookie, tunnel, socket) {
      const id = session.id;
      const open: Open = {
        tunnel,
        socket,
        cookie,
        timer: setTimeout(() => close(open, id, SESSION_ENDED), Math.max(0, session.expiresAt - Date.now())),
      };
      open.timer.unref();
      const set = tunnels.get(id) ?? new Set<Open>();
      tunnels.set(id, set);
      set.add(open);
      tunnel.closed.then(() => {
        clearTimeout(open.timer);
        tunnels.get(id)?.delete(open);
      });
      startWatch();
    },
    closeAll() {
      for (const [id, opens] of tunnels) for (const open of [...opens]) close(open, id, GOING_AWAY);
      if (watch) clearInterval(watch);
      watch = undefined;
    },
  };
}
