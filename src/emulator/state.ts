/**
 * The emulator's mutable state: the model from the fixtures, the clock, signing keys, grants, tokens,
 * browser sessions, faults and the request log.
 */
import { createHash, generateKeyPairSync, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Application, Model, User } from './fixtures.js';

/** Behaviour switches, set at start and changeable through the control API. */
export interface EmulatorBehaviour {
  /**
   * How consent is skipped for trusted apps and confidential apps with a matching token:
   * `page` renders GitLab's 200 "Redirecting" page, `redirect` answers a plain 302.
   */
  autoApprove: 'page' | 'redirect';
  /**
   * Refresh-token rotation: `immediate` (current GitLab: the old access and refresh token die at once)
   * or `on-first-use` (older GitLab: the old refresh token lives until the new access token is first used).
   */
  refreshTokenRotation: 'immediate' | 'on-first-use';
  /** `current` puts profile claims in the ID token; `legacy` reproduces GitLab before about 16.0. */
  idTokenClaims: 'current' | 'legacy';
  /** ID-token lifetime in seconds (GitLab's default 120). */
  idTokenLifetime: number;
  /**
   * Which apps must use PKCE: `public` (non-confidential and dynamic apps) or `dynamic` (only apps
   * registered dynamically, as GitLab with `force_pkce` off).
   */
  pkce: 'public' | 'dynamic';
}

export interface Grant {
  code: string;
  appId: number;
  userId: number;
  redirectUri: string;
  scopes: string[];
  nonce: string | null;
  codeChallenge: string | null;
  codeChallengeMethod: string | null;
  createdAt: number;
  revoked: boolean;
}

export interface Token {
  id: number;
  accessToken: string;
  refreshToken: string;
  appId: number;
  userId: number;
  scopes: string[];
  /** Unix seconds. */
  createdAt: number;
  expiresIn: number;
  revokedAt: number | null;
  /** Older GitLab only: the refresh token this one replaced, revoked when this one is first used. */
  previousRefreshToken: string | null;
}

export interface DeviceGrant {
  deviceCode: string;
  userCode: string;
  appId: number;
  scopes: string[];
  createdAt: number;
  lastPollingAt: number | null;
  userId: number | null;
  denied: boolean;
}

/** A browser session at the emulated GitLab (`_gitlab_session`). */
export interface BrowserSession {
  id: string;
  csrfToken: string;
  userId: number | null;
  /** Set between the password step and the two-factor step. */
  otpUserId: number | null;
  returnTo: string | null;
}

/** A fault injected on an endpoint through the control API. */
export interface Fault {
  id: number;
  /** Path below the base path; a trailing `*` matches a prefix. */
  path: string;
  method: string | null;
  status: number | null;
  body: string | null;
  contentType: string | null;
  headers: Record<string, string>;
  delayMs: number;
  drop: boolean;
  retryAfter: number | null;
  /** Calls left before the fault clears itself; null = until cleared. */
  remaining: number | null;
}

/** One request the emulator received. Bodies, tokens and codes are never recorded. */
export interface LogEntry {
  time: string;
  method: string;
  path: string;
  status: number;
  /** For `/oauth/token`: the grant type requested. */
  grantType?: string;
  /** The client id an OAuth request named, if any. */
  clientId?: string;
  fault?: number;
}

export interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  jwk: Record<string, string>;
}

/** Makes an RS256 signing key whose `kid` is its RFC 7638 thumbprint, as GitLab's. */
export function createSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const { n, e } = publicKey.export({ format: 'jwk' }) as { n: string; e: string };
  const kid = createHash('sha256')
    .update(JSON.stringify({ e, kty: 'RSA', n }))
    .digest('base64url');
  return { kid, privateKey, jwk: { kty: 'RSA', kid, e, n, use: 'sig', alg: 'RS256' } };
}

/** 64 lowercase hex characters, GitLab's format for codes and tokens. */
export function hexToken(): string {
  return randomBytes(32).toString('hex');
}

/** Compares two strings in constant time. */
export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export const ACCESS_TOKEN_LIFETIME = 7200;
export const CODE_LIFETIME = 600;
export const DEVICE_CODE_LIFETIME = 300;
export const DEVICE_POLL_INTERVAL = 5;

/** The whole mutable state of one emulator. */
export class EmulatorState {
  model: Model;
  behaviour: EmulatorBehaviour;
  /** Milliseconds added to the real clock by `/-/emulator/clock`. */
  clockOffsetMs = 0;
  /** Newest first; the first signs ID tokens, all are published. */
  keys: SigningKey[];
  grants = new Map<string, Grant>();
  tokens: Token[] = [];
  deviceGrants = new Map<string, DeviceGrant>();
  sessions = new Map<string, BrowserSession>();
  faults: Fault[] = [];
  log: LogEntry[] = [];
  nextFaultId = 1;
  nextTokenId = 1;

  constructor(model: Model, behaviour: EmulatorBehaviour) {
    this.model = model;
    this.behaviour = behaviour;
    // GitLab publishes its OIDC key and its CI key; the second only ever appears in the JWKS.
    this.keys = [createSigningKey(), createSigningKey()];
  }

  /** The emulator's clock: real time plus the offset set by the control API. */
  now(): Date {
    return new Date(Date.now() + this.clockOffsetMs);
  }

  nowSeconds(): number {
    return Math.floor(this.now().getTime() / 1000);
  }

  userById(id: number): User | undefined {
    return this.model.users.find((u) => u.id === id);
  }

  userByLogin(login: string): User | undefined {
    const key = login.trim().toLowerCase();
    return this.model.users.find((u) => u.username.toLowerCase() === key || u.email.toLowerCase() === key);
  }

  appByUid(uid: string): Application | undefined {
    return this.model.applications.find((a) => a.uid === uid);
  }

  appById(id: number): Application | undefined {
    return this.model.applications.find((a) => a.id === id);
  }

  issueToken(
    app: Application,
    userId: number,
    scopes: string[],
    previousRefreshToken: string | null = null,
  ): Token {
    const token: Token = {
      id: this.nextTokenId++,
      accessToken: hexToken(),
      refreshToken: hexToken(),
      appId: app.id,
      userId,
      scopes,
      createdAt: this.nowSeconds(),
      expiresIn: ACCESS_TOKEN_LIFETIME,
      revokedAt: null,
      previousRefreshToken,
    };
    this.tokens.push(token);
    return token;
  }

  tokenByAccess(value: string): Token | undefined {
    return value ? this.tokens.find((t) => t.accessToken === value) : undefined;
  }

  tokenByRefresh(value: string): Token | undefined {
    return value ? this.tokens.find((t) => t.refreshToken === value) : undefined;
  }

  isExpired(token: Token): boolean {
    return this.nowSeconds() > token.createdAt + token.expiresIn;
  }

  revoke(token: Token): void {
    token.revokedAt ??= this.nowSeconds();
  }

  /** Older GitLab: the first use of a refreshed access token revokes the refresh token it replaced. */
  markUsed(token: Token): void {
    if (token.previousRefreshToken === null) return;
    const previous = this.tokenByRefresh(token.previousRefreshToken);
    if (previous) this.revoke(previous);
    token.previousRefreshToken = null;
  }

  /** Revokes every token of a user (all apps), as "Revoke" on the user's Applications page does per app. */
  revokeUserTokens(userId: number, appId?: number): number {
    let count = 0;
    for (const token of this.tokens) {
      if (
        token.userId === userId &&
        token.revokedAt === null &&
        (appId === undefined || token.appId === appId)
      ) {
        this.revoke(token);
        count++;
      }
    }
    return count;
  }

  /** Signs every browser session of a user out. */
  endUserSessions(userId: number): void {
    for (const session of this.sessions.values()) {
      if (session.userId === userId) session.userId = null;
    }
  }
}
