/**
 * Lifecycle events, in the spirit of `@octokit/oauth-app`: `labgate.on('token.refreshed', handler)`.
 * Handlers never receive a token, secret or code; a handler that throws is logged and ignored.
 */

/** What each event carries. */
export interface LabgateEvents {
  /** A sign-in completed and a session started. */
  'session.created': { sessionId: string; userId: string; issuer: string; sub: string; username: string };
  /** A session ended: sign-out, sign-out everywhere, a refused refresh, a lost account, or access revoked. */
  'session.ended': {
    sessionId: string;
    userId: string;
    reason: 'signed-out' | 'signed-out-everywhere' | 'token-invalid' | 'access-lost' | 'ended';
  };
  /** A GitLab access token was refreshed (by this process). */
  'token.refreshed': { sessionId: string; userId: string; expiresAt: number };
  /** A GitLab token was revoked at GitLab. */
  'token.revoked': { sessionId: string; userId: string };
  /** A sign-in failed; `code` is a {@link LabgateErrorCode}. */
  'signin.failed': { code: string; reference: string };
  /** Access was denied by a policy. */
  'access.denied': {
    sessionId: string | null;
    userId: string | null;
    username: string | null;
    reason: string;
  };
}

/** The name of an event. */
export type LabgateEventName = keyof LabgateEvents;

/** A handler of one event. */
export type LabgateEventHandler<E extends LabgateEventName> = (
  event: LabgateEvents[E],
) => void | Promise<void>;

/** A small typed emitter; errors in handlers go to `onError`. */
export class Emitter {
  readonly #handlers = new Map<LabgateEventName, Set<LabgateEventHandler<never>>>();
  readonly #onError: (name: LabgateEventName, error: unknown) => void;

  constructor(onError: (name: LabgateEventName, error: unknown) => void) {
    this.#onError = onError;
  }

  /** Adds a handler; returns a function that removes it. */
  on<E extends LabgateEventName>(name: E, handler: LabgateEventHandler<E>): () => void {
    let set = this.#handlers.get(name);
    if (!set) {
      set = new Set();
      this.#handlers.set(name, set);
    }
    set.add(handler as LabgateEventHandler<never>);
    return () => set.delete(handler as LabgateEventHandler<never>);
  }

  /** Calls every handler of an event; never throws, never waits for async handlers. */
  emit<E extends LabgateEventName>(name: E, event: LabgateEvents[E]): void {
    const set = this.#handlers.get(name);
    if (!set) return;
    for (const handler of set) {
      try {
        const result = (handler as LabgateEventHandler<E>)(event);
        if (result instanceof Promise) result.catch((error: unknown) => this.#onError(name, error));
      } catch (error) {
        this.#onError(name, error);
      }
    }
  }
}
