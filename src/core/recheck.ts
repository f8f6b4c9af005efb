/**
 * Access from GitLab while a session lives: decided at sign-in, re-checked on an interval, after every
 * token refresh and at once on a webhook; policies a route asks for (guards, `checkAccess`) compiled
 * once and their decisions cached per session for the re-check interval. Deciding is a pure function
 * (src/core/access.ts); here is the I/O around it and what a decision does to a session.
 */
import {
  type AccessFacts,
  accessFailureText,
  type Decision,
  evaluateAccess,
  type NormalisedPolicy,
  normalisePolicy,
  type Policy,
} from './access.js';
import { isLabgateError, LabgateError } from './errors.js';
import { fetchAccessFacts, TokenRejected } from './memberships.js';
import type { Runtime } from './runtime.js';
import type { Session, SessionState } from './sessions.js';
import type { SessionUser, TokenSet } from './store.js';
import type { Tokens } from './tokens.js';

/** A policy or one rule, normalised once, with the key its decisions are cached under. */
export interface CompiledPolicy {
  policy: NormalisedPolicy;
  key: string;
}

/** Access decisions of one instance. */
export interface AccessChecks {
  /** The app-wide policy at sign-in; throws `access_forbidden` (and revokes the new tokens) when denied. */
  atSignIn(user: SessionUser, tokens: TokenSet): Promise<Decision>;
  /** Whether the session's app-wide access is due for a re-check. */
  due(state: SessionState): boolean;
  /** Re-checks the app-wide policy; false when the session has ended. Single-flight per session. */
  recheck(state: SessionState): Promise<boolean>;
  /** Re-checks every session of a user now (a webhook said their memberships changed). */
  recheckUser(userId: string): Promise<{ rechecked: number; ended: number }>;
  /** Compiles a policy or rule; TypeError when it is malformed. */
  compile(input: Policy | string): CompiledPolicy;
  /** A decision made for the session within the re-check interval, or undefined. */
  decided(sessionId: string, compiled: CompiledPolicy): Decision | undefined;
  /** Decides a compiled policy for a session, asking GitLab unless a recent decision is known. */
  decide(state: SessionState, compiled: CompiledPolicy): Promise<Decision>;
}

/** Access decisions on a runtime and its tokens. */
export function createAccessChecks(rt: Runtime, tokens: Tokens): AccessChecks {
  const { options, sessions, events } = rt;
  const { logger } = options;
  const rechecking = new Map<string, Promise<boolean>>();
  const decisions = new Map<string, { decision: Decision; at: number }>();

  async function userinfoOk(token: string): Promise<boolean> {
    const server = await rt.provider();
    if (!server.server.userinfo_endpoint) return true;
    const response = await rt.guarded(server.server.userinfo_endpoint, {
      headers: { authorization: `Bearer ${token}` },
    });
    await response.body?.cancel();
    if (response.status === 401 || response.status === 403) return false;
    if (!response.ok) throw new LabgateError('gitlab_error', `userinfo answered ${response.status}`);
    return true;
  }

  function deny(decision: Decision, session: Session | null, user: SessionUser): LabgateError {
    const failed = decision.failed ?? 'no-rule-matched';
    events.emit('access.denied', {
      sessionId: session?.id ?? null,
      userId: session?.userId ?? null,
      username: user.username,
      reason: failed,
    });
    return new LabgateError('access_forbidden', `access denied to ${user.username}: ${failed}`, {
      detail: accessFailureText(failed),
    });
  }

  /** The session's API client: its token refreshes itself, a 401 refreshes once. */
  const apiOf = (state: SessionState) =>
    rt.apiFor(({ forceRefresh }) => tokens.accessToken(state, forceRefresh));

  async function recheckNow(state: SessionState): Promise<boolean> {
    const { session } = state;
    const now = options.now();
    const okAt = state.access?.okAt ?? session.createdAt;
    const unreachable = async (): Promise<boolean> => {
      if (now - okAt > options.accessGracePeriod * 1000) {
        // GitLab has not answered for longer than the grace period: fail closed.
        logger.warn(
          `labgate: access of session ${session.id} could not be re-checked for too long; ending it`,
        );
        await rt.endState(state, 'access-lost');
        return false;
      }
      // Keep the last decision, and try again in 30 seconds, or as the grace period ends if sooner.
      const retryAt = Math.min(now + 30_000, okAt + options.accessGracePeriod * 1000 + 1);
      await sessions.setAccess(state, {
        roles: state.access?.roles ?? session.user.roles,
        checkedAt: retryAt - options.recheckInterval * 1000,
        okAt,
      });
      return true;
    };
    let facts: AccessFacts;
    try {
      const held = await sessions.tokens(state);
      facts = await fetchAccessFacts({
        api: apiOf(state),
        user: session.user,
        policy: options.access,
        scopes: held.scope.split(' '),
        now,
        userinfo: async () => userinfoOk(await tokens.accessToken(state, false)),
      });
    } catch (error) {
      const ended = isLabgateError(error) && error.code === 'session_required';
      if (error instanceof TokenRejected || ended) {
        if (!ended) await rt.endState(state, 'token-invalid');
        return false;
      }
      if (isLabgateError(error) && error.code === 'store_unavailable') throw error;
      return unreachable();
    }
    // Facts GitLab could not give are not a verdict: keep the last decision for the grace period.
    if (facts.complete === false) return unreachable();
    const decision = evaluateAccess(options.access, facts);
    if (decision.allowed) {
      await sessions.setAccess(state, { roles: decision.roles, checkedAt: now, okAt: now });
      return true;
    }
    deny(decision, session, session.user);
    logger.info(`labgate: session ${session.id} lost access (${decision.failed})`);
    await rt.endState(state, 'access-lost');
    return false;
  }

  const checks: AccessChecks = {
    async atSignIn(user, signedIn) {
      let facts: AccessFacts;
      try {
        // userinfo answered during the sign-in: the account is active.
        facts = await fetchAccessFacts({
          api: rt.apiFor(async () => signedIn.accessToken),
          user,
          policy: options.access,
          scopes: signedIn.scope.split(' '),
          now: options.now(),
          userinfo: async () => true,
          fresh: true,
        });
      } catch (error) {
        throw error instanceof TokenRejected
          ? new LabgateError('account_unavailable', 'GitLab refused the new token')
          : error;
      }
      const decision = evaluateAccess(options.access, facts);
      if (!decision.allowed) {
        await tokens.revokeQuietly(signedIn);
        throw deny(decision, null, user);
      }
      return decision;
    },

    due(state) {
      const checkedAt = state.access?.checkedAt ?? state.session.createdAt;
      return options.now() - checkedAt >= options.recheckInterval * 1000;
    },

    recheck(state) {
      let pending = rechecking.get(state.session.id);
      if (!pending) {
        pending = recheckNow(state).finally(() => rechecking.delete(state.session.id));
        rechecking.set(state.session.id, pending);
      }
      return pending;
    },

    async recheckUser(userId) {
      const states = await sessions.ofUser(userId);
      let ended = 0;
      for (const state of states) {
        rt.remember(state);
        for (const key of decisions.keys()) if (key.startsWith(`${state.session.id} `)) decisions.delete(key);
        if (!(await checks.recheck(state))) ended++;
      }
      return { rechecked: states.length, ended };
    },

    compile(input) {
      const policy = normalisePolicy(typeof input === 'string' ? { allow: [input], require: [] } : input);
      return { policy, key: JSON.stringify(policy) };
    },

    decided(sessionId, compiled) {
      const cached = decisions.get(`${sessionId} ${compiled.key}`);
      return cached && options.now() - cached.at < options.recheckInterval * 1000
        ? cached.decision
        : undefined;
    },

    async decide(state, compiled) {
      const { session } = state;
      const cached = checks.decided(session.id, compiled);
      if (cached) return cached;
      const now = options.now();
      const held = await sessions.tokens(state);
      let facts: AccessFacts;
      try {
        facts = await fetchAccessFacts({
          api: apiOf(state),
          user: session.user,
          policy: compiled.policy,
          scopes: held.scope.split(' '),
          now,
          userinfo: async () => true,
          fresh: true,
        });
      } catch (error) {
        if (error instanceof TokenRejected) {
          await rt.endState(state, 'token-invalid');
          throw new LabgateError('session_required', 'GitLab refused the token');
        }
        throw error;
      }
      const decision = evaluateAccess(compiled.policy, facts);
      if (facts.complete !== false) {
        if (decisions.size >= 10_000) decisions.delete(decisions.keys().next().value!);
        decisions.set(`${session.id} ${compiled.key}`, { decision, at: now });
      }
      if (!decision.allowed) deny(decision, session, session.user);
      return decision;
    },
  };
  return checks;
}
