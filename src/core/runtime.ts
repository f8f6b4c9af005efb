/**
 * What every part of one labgate instance shares: its options, store, keys, GitLab (discovered once),
 * sessions, events, and the states of the sessions this process has seen. The parts (routes, the
 * sign-in callback, tokens, access re-checks, guards) each take a {@link Runtime}; `createLabgate`
 * builds one and assembles them.
 */

import { CookieSessions } from './cookie-sessions.js';
import { KeyRing, parseSecrets } from './crypto.js';
import { isLabgateError, LabgateError } from './errors.js';
import { Emitter, type LabgateEvents } from './events.js';
import { createGitLabClient, type GitLabClient, type GitLabClientOptions } from './gitlab.js';
import { type LabgateOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { discover, guardFetch, type Provider } from './provider.js';
import { ServerSessions } from './server-sessions.js';
import type { Session, SessionState, Sessions } from './sessions.js';
import { MemoryStore, type Store } from './store.js';

/** One labgate instance's shared parts. */
export interface Runtime {
  options: ResolvedOptions;
  store: Store;
  keys: () => Promise<KeyRing>;
  /** GitLab as discovered (once; a failure is retried, not more than once every 5 s). */
  provider: () => Promise<Provider>;
  sessions: Sessions;
  events: Emitter;
  /** Every request to GitLab outside oauth4webapi goes through this (timeouts, caps, no redirects). */
  guarded: typeof fetch;
  /** Remembers a session's state by id, for the methods that take a session id. */
  remember(state: SessionState): void;
  /** The state of a session given as the object or its id; `session_required` once it has ended. */
  stateFor(session: Session | string, what: string): Promise<SessionState>;
  /** Runs a store call; any failure becomes `store_unavailable`. */
  storeCall<T>(run: () => Promise<T>): Promise<T>;
  /** Ends a session and tells the listeners why. */
  endState(state: SessionState, reason: LabgateEvents['session.ended']['reason']): Promise<void>;
  /** A GitLab API client on this instance's GitLab, with the given source of tokens. */
  apiFor(getToken: GitLabClientOptions['getToken']): GitLabClient;
}

/** Builds the runtime of an instance; checks the options (TypeError on misuse). */
export function createRuntime(input: LabgateOptions): Runtime {
  const options = resolveOptions(input);
  parseSecrets(options.secret);
  const store = input.store ?? new MemoryStore({ now: options.now });
  let ring: Promise<KeyRing> | undefined;
  const keys = () => {
    ring ??= KeyRing.fromSecret(options.secret);
    return ring;
  };
  let discovered: Promise<Provider> | undefined;
  let failedAt = 0;
  const provider = () => {
    // A failed discovery is retried, but not more than once every 5 seconds.
    if (!discovered && options.now() - failedAt < 5000 && failedAt !== 0) {
      return Promise.reject(new LabgateError('gitlab_unreachable', 'GitLab discovery failed moments ago'));
    }
    discovered ??= discover(options).catch((error: unknown) => {
      discovered = undefined;
      failedAt = options.now();
      throw error;
    });
    return discovered;
  };
  const sessions: Sessions =
    options.sessionMode === 'cookie'
      ? new CookieSessions(options, store, keys)
      : new ServerSessions(options, store, keys);
  const events = new Emitter((name, error) =>
    options.logger.error(
      `labgate: a ${name} handler failed: ${error instanceof Error ? error.message : String(error)}`,
    ),
  );
  // The states of sessions this process has seen, by id: hosts keep only a session's id (a serialised
  // session, a server component's copy), and every method takes the id as well as the object.
  const live = new Map<string, SessionState>();
  const remember = (state: SessionState) => {
    if (live.get(state.session.id) === state) return;
    if (live.size >= 10_000) live.delete(live.keys().next().value!);
    live.set(state.session.id, state);
  };
  return {
    options,
    store,
    keys,
    provider,
    sessions,
    events,
    guarded: guardFetch(options),
    remember,
    async stateFor(session, what) {
      const id = typeof session === 'string' ? session : session?.id;
      if (typeof id !== 'string') throw new TypeError(`labgate: ${what} takes a session or a session id`);
      const known = live.get(id);
      if (known) return known;
      const loaded = await sessions.byId(id);
      if (!loaded) throw new LabgateError('session_required', 'the session has ended');
      remember(loaded);
      return loaded;
    },
    async storeCall(run) {
      try {
        return await run();
      } catch (error) {
        throw isLabgateError(error)
          ? error
          : new LabgateError('store_unavailable', 'the store failed', { cause: error });
      }
    },
    async endState(state, reason) {
      await sessions.end(state);
      events.emit('session.ended', { sessionId: state.session.id, userId: state.session.userId, reason });
    },
    apiFor: (getToken) =>
      createGitLabClient({
        gitlabUrl: options.gitlabUrl.href,
        getToken,
        fetch: options.fetch,
        timeout: options.requestTimeout,
      }),
  };
}
