/**
 * Test control of the emulator: the same operations as a class for in-process tests and as HTTP routes
 * under `/-/emulator/` for tests in other processes or languages.
 */
import { randomBytes } from 'node:crypto';
import type { Env } from './env.js';
import {
  type AccessLevelInput,
  FixtureError,
  type Fixtures,
  type Model,
  normaliseFixtures,
  parseAccessLevel,
  type User,
} from './fixtures.js';
import { json, type Reply, type RequestContext, type Router } from './http.js';
import { createSigningKey, type EmulatorBehaviour, type Fault, type LogEntry } from './state.js';

/** A fault to inject: what to answer instead of the real endpoint, for how many calls. */
export interface FaultSpec {
  /** Path below the base path (`/oauth/token`); a trailing `*` matches every path with that prefix. */
  path: string;
  /** Only this method (default: any). */
  method?: string;
  /** Answer with this status (default 500 when only a body is given). */
  status?: number;
  /** Answer with this body (default: GitLab's HTML error page for 5xx, `Retry later` for 429). */
  body?: string;
  contentType?: string;
  headers?: Record<string, string>;
  /** Wait this long first; with no status, body or drop, the real endpoint answers after the delay. */
  delayMs?: number;
  /** Close the connection without answering. */
  drop?: boolean;
  /** Seconds for a `Retry-After` header. */
  retryAfter?: number;
  /** Apply to the next N matching calls only (default: until cleared). */
  times?: number;
}

/** Filters for {@link EmulatorControl.requests}. */
export interface RequestFilter {
  path?: string;
  method?: string;
  grantType?: string;
}

/** A membership change: a user in a group or a project. */
export interface MembershipSpec {
  user: string;
  group?: string;
  project?: string;
  accessLevel?: AccessLevelInput;
  expiresAt?: string | null;
}

/** A share change: a group invited into a group or a project. */
export interface ShareSpec {
  sharedWith: string;
  group?: string;
  project?: string;
  accessLevel?: AccessLevelInput;
  expiresAt?: string | null;
}

/** A token minted directly, without the browser flow. */
export interface MintedToken {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  refresh_token: string;
  scope: string;
  created_at: number;
}

/** Thrown by a control operation given bad input; the HTTP control API answers it with 400 or 404. */
export class ControlError extends Error {
  constructor(
    readonly status: 400 | 404,
    message: string,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}

/** The control operations of one running emulator. */
export class EmulatorControl {
  readonly #env: Env;
  readonly #fixtures: Fixtures;
  readonly #initialBehaviour: EmulatorBehaviour;

  constructor(env: Env, fixtures: Fixtures) {
    this.#env = env;
    this.#fixtures = structuredClone(fixtures);
    this.#initialBehaviour = { ...env.state.behaviour };
  }

  get #state() {
    return this.#env.state;
  }

  /** The emulator's current time. */
  now(): Date {
    return this.#state.now();
  }

  /** Moves the emulator's clock forward (or back, with a negative number) by this many seconds. */
  advanceClock(seconds: number): Date {
    if (!Number.isFinite(seconds)) throw new ControlError(400, 'seconds must be a number');
    this.#state.clockOffsetMs += seconds * 1000;
    return this.now();
  }

  /** Sets the emulator's clock to an instant. */
  setClock(at: string | Date): Date {
    const time = new Date(at).getTime();
    if (Number.isNaN(time)) throw new ControlError(400, 'not a valid date');
    this.#state.clockOffsetMs = time - Date.now();
    return this.now();
  }

  /**
   * Puts a new signing key first (it signs from now on). The old keys stay published unless `retire`
   * is set, in which case only the new key and GitLab's second (CI) key remain.
   */
  rotateSigningKey(options: { retire?: boolean } = {}): string {
    const key = createSigningKey();
    const [current, ...rest] = this.#state.keys;
    this.#state.keys = options.retire ? [key, ...rest.slice(-1)] : [key, current!, ...rest];
    return key.kid;
  }

  /** The `kid` of the key that signs ID tokens now. */
  signingKeyId(): string {
    return this.#state.keys[0]!.kid;
  }

  /** Injects a fault; returns its id. Faults apply in the order they were added. */
  injectFault(spec: FaultSpec): number {
    if (typeof spec.path !== 'string' || !spec.path.startsWith('/')) {
      throw new ControlError(400, 'path must start with "/"');
    }
    if (
      spec.status !== undefined &&
      !(Number.isInteger(spec.status) && spec.status >= 100 && spec.status <= 599)
    ) {
      throw new ControlError(400, 'status must be an HTTP status code');
    }
    if (spec.times !== undefined && !(Number.isInteger(spec.times) && spec.times > 0)) {
      throw new ControlError(400, 'times must be a positive integer');
    }
    const fault: Fault = {
      id: this.#state.nextFaultId++,
      path: spec.path,
      method: spec.method ? spec.method.toUpperCase() : null,
      status: spec.status ?? (spec.body !== undefined ? 500 : null),
      body: spec.body ?? null,
      contentType: spec.contentType ?? null,
      headers: { ...spec.headers },
      delayMs: Math.max(0, Number(spec.delayMs ?? 0)),
      drop: spec.drop === true,
      retryAfter: spec.retryAfter ?? null,
      remaining: spec.times ?? null,
    };
    if (fault.retryAfter !== null && fault.status === null) fault.status = 429;
    this.#state.faults.push(fault);
    return fault.id;
  }

  /** Clears one fault, or all of them. */
  clearFaults(id?: number): void {
    this.#state.faults = id === undefined ? [] : this.#state.faults.filter((f) => f.id !== id);
  }

  /** The faults still in force. */
  faults(): Fault[] {
    return this.#state.faults.map((f) => ({ ...f }));
  }

  /** The requests received so far, oldest first (no bodies, tokens or codes are recorded). */
  requests(filter: RequestFilter = {}): LogEntry[] {
    return this.#state.log.filter(
      (e) =>
        (filter.path === undefined || e.path === filter.path) &&
        (filter.method === undefined || e.method === filter.method.toUpperCase()) &&
        (filter.grantType === undefined || e.grantType === filter.grantType),
    );
  }

  /** Forgets the requests received so far. */
  clearRequests(): void {
    this.#state.log = [];
  }

  #user(username: string): User {
    const user = this.#state.userByLogin(String(username));
    if (!user) throw new ControlError(404, `no user ${username}`);
    return user;
  }

  #target(spec: { group?: string | undefined; project?: string | undefined }): {
    kind: 'group' | 'project';
    id: number;
  } {
    const { model } = this.#state;
    if ((spec.group === undefined) === (spec.project === undefined)) {
      throw new ControlError(400, 'give exactly one of "group" or "project"');
    }
    if (spec.group !== undefined) {
      const group = model.groups.find((g) => g.fullPath.toLowerCase() === String(spec.group).toLowerCase());
      if (!group) throw new ControlError(404, `no group ${spec.group}`);
      return { kind: 'group', id: group.id };
    }
    const project = model.projects.find(
      (p) => p.fullPath.toLowerCase() === String(spec.project).toLowerCase(),
    );
    if (!project) throw new ControlError(404, `no project ${spec.project}`);
    return { kind: 'project', id: project.id };
  }

  #level(value: AccessLevelInput | undefined): number {
    try {
      return parseAccessLevel(value, 'accessLevel');
    } catch (error) {
      throw new ControlError(400, (error as Error).message);
    }
  }

  /** Adds a direct membership, or changes its level and expiry if it exists. */
  setMembership(spec: MembershipSpec): void {
    const user = this.#user(spec.user);
    const { kind, id } = this.#target(spec);
    const accessLevel = this.#level(spec.accessLevel);
    const existing = this.#state.model.memberships.find(
      (m) => m.userId === user.id && m.source === kind && m.sourceId === id,
    );
    if (existing) {
      existing.accessLevel = accessLevel;
      if (spec.expiresAt !== undefined) existing.expiresAt = spec.expiresAt;
      return;
    }
    this.#state.model.memberships.push({
      userId: user.id,
      source: kind,
      sourceId: id,
      accessLevel,
      expiresAt: spec.expiresAt ?? null,
      createdAt: this.now().toISOString(),
    });
  }

  /** Removes a direct membership; returns whether there was one. */
  removeMembership(spec: MembershipSpec): boolean {
    const user = this.#user(spec.user);
    const { kind, id } = this.#target(spec);
    const before = this.#state.model.memberships.length;
    this.#state.model.memberships = this.#state.model.memberships.filter(
      (m) => !(m.userId === user.id && m.source === kind && m.sourceId === id),
    );
    return this.#state.model.memberships.length < before;
  }

  /** Invites a group into a group or project, or changes the share's level and expiry. */
  setShare(spec: ShareSpec): void {
    const invited = this.#target({ group: spec.sharedWith });
    const { kind, id } = this.#target(spec);
    if (kind === 'group' && id === invited.id)
      throw new ControlError(400, 'a group cannot be shared with itself');
    const accessLevel = this.#level(spec.accessLevel);
    const existing = this.#state.model.shares.find(
      (s) => s.sharedWithGroupId === invited.id && s.target === kind && s.targetId === id,
    );
    if (existing) {
      existing.accessLevel = accessLevel;
      if (spec.expiresAt !== undefined) existing.expiresAt = spec.expiresAt;
      return;
    }
    this.#state.model.shares.push({
      sharedWithGroupId: invited.id,
      target: kind,
      targetId: id,
      accessLevel,
      expiresAt: spec.expiresAt ?? null,
    });
  }

  /** Removes a share; returns whether there was one. */
  removeShare(spec: ShareSpec): boolean {
    const invited = this.#target({ group: spec.sharedWith });
    const { kind, id } = this.#target(spec);
    const before = this.#state.model.shares.length;
    this.#state.model.shares = this.#state.model.shares.filter(
      (s) => !(s.sharedWithGroupId === invited.id && s.target === kind && s.targetId === id),
    );
    return this.#state.model.shares.length < before;
  }

  /**
   * Changes a user's state. Blocking or deactivating signs the user out of the emulated GitLab;
   * their OAuth tokens stay, but the API and userinfo refuse them, as GitLab does.
   */
  setUserState(username: string, state: User['state']): void {
    if (!['active', 'blocked', 'deactivated'].includes(state)) {
      throw new ControlError(400, 'state must be active, blocked or deactivated');
    }
    const user = this.#user(username);
    user.state = state;
    if (state !== 'active') this.#state.endUserSessions(user.id);
  }

  /** Blocks a user. */
  blockUser(username: string): void {
    this.setUserState(username, 'blocked');
  }

  /** Unblocks a user. */
  unblockUser(username: string): void {
    this.setUserState(username, 'active');
  }

  /** Revokes a user's OAuth tokens (of one application, or all); returns how many were revoked. */
  revokeUserTokens(username: string, clientId?: string): number {
    const user = this.#user(username);
    let appId: number | undefined;
    if (clientId !== undefined) {
      const app = this.#state.appByUid(clientId);
      if (!app) throw new ControlError(404, 'no application with that client id');
      appId = app.id;
    }
    return this.#state.revokeUserTokens(user.id, appId);
  }

  /**
   * Renews an application's secret, as "Renew secret" in GitLab's application settings (or
   * `POST /api/v4/applications/:id/renew-secret`) does: the new secret works at once, the old one is
   * refused with 401 `invalid_client` from then on; issued tokens stay valid. Returns the new secret.
   *
   * @example
   * ```ts
   * const secret = gitlab.control.renewSecret(gitlab.applications[0].uid); // or POST /-/emulator/applications/:clientId/renew-secret
   * ```
   */
  renewSecret(clientId: string): string {
    const app = this.#state.appByUid(String(clientId));
    if (!app) throw new ControlError(404, 'no application with that client id');
    // GitLab's secrets since 16.x: the `gloas-` prefix and 64 hexadecimal characters.
    app.secret = `gloas-${randomBytes(32).toString('hex')}`;
    return app.secret;
  }

  /**
   * Ends every live access token now, without moving the emulator's clock: what an app sees when
   * GitLab ends a token before the app's clock says so (an administrator revoked it, GitLab's clock
   * runs ahead, an older GitLab expired it early). The API and userinfo answer 401 `invalid_token`
   * ("Token is expired"); refresh tokens stay valid, so a client that refreshes carries on.
   * Returns how many tokens were expired.
   *
   * @example
   * ```ts
   * gitlab.control.expireAccessTokens(); // or POST /-/emulator/tokens/expire
   * ```
   */
  expireAccessTokens(): number {
    const state = this.#state;
    const now = state.nowSeconds();
    let expired = 0;
    for (const token of state.tokens) {
      if (token.revokedAt !== null || state.isExpired(token)) continue;
      // A token is expired once the clock is past createdAt + expiresIn: make that a second ago.
      token.expiresIn = now - token.createdAt - 1;
      expired++;
    }
    return expired;
  }

  /**
   * Issues a token for a user without the browser flow, as if they had authorised the application
   * (the first application by default) with these scopes (its registered scopes by default).
   */
  mintToken(options: { user: string; clientId?: string; scopes?: string[] }): MintedToken {
    const user = this.#user(options.user);
    const app = options.clientId ? this.#state.appByUid(options.clientId) : this.#state.model.applications[0];
    if (!app) throw new ControlError(404, 'no such application');
    const scopes = options.scopes ?? app.scopes;
    const token = this.#state.issueToken(app, user.id, [...scopes]);
    return {
      access_token: token.accessToken,
      token_type: 'Bearer',
      expires_in: token.expiresIn,
      refresh_token: token.refreshToken,
      scope: token.scopes.join(' '),
      created_at: token.createdAt,
    };
  }

  /** The current behaviour switches. */
  behaviour(): EmulatorBehaviour {
    return { ...this.#state.behaviour };
  }

  /** Changes behaviour switches. */
  setBehaviour(changes: Partial<EmulatorBehaviour>): EmulatorBehaviour {
    const next = { ...this.#state.behaviour, ...changes };
    const allowed: Record<string, unknown[]> = {
      autoApprove: ['page', 'redirect'],
      refreshTokenRotation: ['immediate', 'on-first-use'],
      idTokenClaims: ['current', 'legacy'],
      pkce: ['public', 'dynamic'],
    };
    for (const [key, values] of Object.entries(allowed)) {
      if (!values.includes(next[key as keyof EmulatorBehaviour])) {
        throw new ControlError(400, `${key} must be one of ${values.join(', ')}`);
      }
    }
    if (!(Number.isInteger(next.idTokenLifetime) && next.idTokenLifetime > 0)) {
      throw new ControlError(400, 'idTokenLifetime must be a positive integer');
    }
    this.#state.behaviour = next;
    return this.behaviour();
  }

  /** Back to the state at start: fixtures, behaviour and clock; every token, session, fault and log entry dropped. */
  reset(): void {
    const state = this.#state;
    state.model = normaliseFixtures(structuredClone(this.#fixtures));
    state.behaviour = { ...this.#initialBehaviour };
    state.clockOffsetMs = 0;
    state.grants.clear();
    state.tokens = [];
    state.deviceGrants.clear();
    state.sessions.clear();
    state.faults = [];
    state.log = [];
  }

  /** The model in force now (users, groups, projects, memberships, shares, applications). */
  model(): Model {
    return structuredClone(this.#state.model);
  }
}

function body(ctx: RequestContext): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of ctx.form) {
    try {
      out[key] = JSON.parse(value);
    } catch {
      out[key] = value;
    }
  }
  return out;
}

function guard(run: (ctx: RequestContext) => unknown): (ctx: RequestContext) => Reply {
  return (ctx) => {
    try {
      const result = run(ctx);
      return json(200, result ?? {});
    } catch (error) {
      if (error instanceof ControlError) return json(error.status, { error: error.message });
      if (error instanceof FixtureError) return json(400, { error: error.message });
      throw error;
    }
  };
}

/** Registers the control API under `/-/emulator/`. */
export function registerControlRoutes(router: Router, control: EmulatorControl): void {
  const p = '/-/emulator';
  router.on(
    'GET',
    `${p}/`,
    guard(() => ({
      now: control.now().toISOString(),
      behaviour: control.behaviour(),
      model: control.model(),
    })),
  );
  router.on(
    'POST',
    `${p}/clock`,
    guard((ctx) => {
      const b = body(ctx);
      const now =
        b['set'] !== undefined
          ? control.setClock(String(b['set']))
          : control.advanceClock(Number(b['advance']));
      return { now: now.toISOString() };
    }),
  );
  router.on(
    'GET',
    `${p}/clock`,
    guard(() => ({ now: control.now().toISOString() })),
  );
  router.on(
    'POST',
    `${p}/keys/rotate`,
    guard((ctx) => ({ kid: control.rotateSigningKey({ retire: body(ctx)['retire'] === true }) })),
  );
  router.on(
    'GET',
    `${p}/faults`,
    guard(() => control.faults()),
  );
  router.on(
    'POST',
    `${p}/faults`,
    guard((ctx) => ({ id: control.injectFault(body(ctx) as unknown as FaultSpec) })),
  );
  router.on(
    'DELETE',
    `${p}/faults`,
    guard(() => control.clearFaults()),
  );
  router.on(
    'DELETE',
    `${p}/faults/:id`,
    guard((ctx) => control.clearFaults(Number(ctx.params['id']))),
  );
  router.on(
    'GET',
    `${p}/requests`,
    guard((ctx) => {
      const filter: RequestFilter = {};
      for (const key of ['path', 'method', 'grantType'] as const) {
        const value = ctx.query.get(key);
        if (value !== null) filter[key] = value;
      }
      return control.requests(filter);
    }),
  );
  router.on(
    'DELETE',
    `${p}/requests`,
    guard(() => control.clearRequests()),
  );
  router.on(
    'POST',
    `${p}/memberships`,
    guard((ctx) => control.setMembership(body(ctx) as unknown as MembershipSpec)),
  );
  router.on(
    'DELETE',
    `${p}/memberships`,
    guard((ctx) => ({ removed: control.removeMembership(body(ctx) as unknown as MembershipSpec) })),
  );
  router.on(
    'POST',
    `${p}/shares`,
    guard((ctx) => control.setShare(body(ctx) as unknown as ShareSpec)),
  );
  router.on(
    'DELETE',
    `${p}/shares`,
    guard((ctx) => ({ removed: control.removeShare(body(ctx) as unknown as ShareSpec) })),
  );
  router.on(
    'POST',
    `${p}/users/:username/block`,
    guard((ctx) => control.blockUser(ctx.params['username']!)),
  );
  router.on(
    'POST',
    `${p}/users/:username/unblock`,
    guard((ctx) => control.unblockUser(ctx.params['username']!)),
  );
  router.on(
    'POST',
    `${p}/users/:username/state`,
    guard((ctx) => control.setUserState(ctx.params['username']!, body(ctx)['state'] as User['state'])),
  );
  router.on(
    'POST',
    `${p}/users/:username/revoke-tokens`,
    guard((ctx) => {
      const clientId = body(ctx)['clientId'];
      return {
        revoked: control.revokeUserTokens(
          ctx.params['username']!,
          clientId === undefined ? undefined : String(clientId),
        ),
      };
    }),
  );
  router.on(
    'POST',
    `${p}/applications/:clientId/renew-secret`,
    guard((ctx) => ({ secret: control.renewSecret(ctx.params['clientId']!) })),
  );
  router.on(
    'POST',
    `${p}/tokens`,
    guard((ctx) => {
      const b = body(ctx);
      const options: { user: string; clientId?: string; scopes?: string[] } = { user: String(b['user']) };
      if (b['clientId'] !== undefined) options.clientId = String(b['clientId']);
      if (b['scopes'] !== undefined) {
        options.scopes = Array.isArray(b['scopes'])
          ? b['scopes'].map(String)
          : String(b['scopes']).split(' ');
      }
      return control.mintToken(options);
    }),
  );
  router.on(
    'POST',
    `${p}/tokens/expire`,
    guard(() => ({ expired: control.expireAccessTokens() })),
  );
  router.on(
    'GET',
    `${p}/behaviour`,
    guard(() => control.behaviour()),
  );
  router.on(
    'POST',
    `${p}/behaviour`,
    guard((ctx) => control.setBehaviour(body(ctx) as Partial<EmulatorBehaviour>)),
  );
  router.on(
    'POST',
    `${p}/reset`,
    guard(() => control.reset()),
  );
}
