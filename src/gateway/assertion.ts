/**
 * The signed identity assertion (docs/gateway.md, "Signed identity"; docs/security.md, GATEWAY-9): a
 * short-lived JWT the gateway adds to each proxied request, so the upstream can verify who the user is
 * instead of trusting a header anyone who reaches it could send. Signed with Ed25519; the key is derived
 * from `LABGATE_SECRET`, so every gateway instance sharing the secret signs with the same key and
 * publishes the same JWKS at `/oauth2/jwks.json`.
 */
import { createHash, createPrivateKey, createPublicKey, hkdfSync, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import type { Session } from '../core/index.js';
import type { AssertionConfig } from './config.js';

// PKCS #8 prefix of an Ed25519 private key: the 32-byte seed follows it.
const ED25519_PKCS8 = Buffer.from('302e020100300506032b657004220420', 'hex');

/** Signs assertions and publishes their key. */
export interface Assertions {
  /** The JWT for a session, reused until half of its lifetime has passed. */
  tokenFor(session: Session): Promise<string>;
  /** The JWKS body (`{ keys: [...] }`). */
  readonly jwks: string;
}

/** Creates the signer from the newest `LABGATE_SECRET` (base64url). */
export function createAssertions(
  config: AssertionConfig,
  options: { secret: string; issuer: string; now: () => number },
): Assertions {
  const seed = Buffer.from(
    hkdfSync('sha256', Buffer.from(options.secret, 'base64url'), 'labgate', 'gateway-assertion', 32),
  );
  const key: KeyObject = createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8, seed]),
    format: 'der',
    type: 'pkcs8',
  });
  const jwk = createPublicKey(key).export({ format: 'jwk' });
  const kid = createHash('sha256').update(String(jwk.x)).digest('base64url').slice(0, 16);
  const jwks = JSON.stringify({ keys: [{ ...jwk, kid, alg: 'EdDSA', use: 'sig' }] });
  const cache = new Map<string, { token: string; renewAt: number }>();

  async function tokenFor(session: Session): Promise<string> {
    const now = options.now();
    const cached = cache.get(session.id);
    if (cached && cached.renewAt > now) return cached.token;
    const { user } = session;
    const iat = Math.floor(now / 1000);
    const token = await new SignJWT({
      gitlab_issuer: user.issuer,
      preferred_username: user.username,
      name: user.name,
      ...(user.email && user.emailVerified ? { email: user.email, email_verified: true } : {}),
      groups: user.groups,
      sid: session.id,
    })
      .setProtectedHeader({ alg: 'EdDSA', kid, typ: 'JWT' })
      .setIssuer(options.issuer)
      .setAudience(config.audience)
      .setSubject(user.sub)
      .setIssuedAt(iat)
      .setExpirationTime(iat + config.ttl)
      .sign(key);
    if (cache.size >= 10_000) cache.clear();
    cache.set(session.id, { token, renewAt: now + (config.ttl * 1000) / 2 });
    return token;
  }

  return { tokenFor, jwks };
}
