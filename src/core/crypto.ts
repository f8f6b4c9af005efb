/**
 * Sealing with a key ring: AES-256-GCM under keys derived by HKDF from `LABGATE_SECRET`, one derived key
 * per purpose (session, transaction, token), a fresh random nonce on every seal, and the purpose as
 * associated data, so a value sealed for one purpose never opens as another. The newest secret seals;
 * older ones still open, and a value they opened is reported as stale so that it can be re-sealed.
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** base64url without padding. */
export function toBase64Url(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]!);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Decodes base64url (padding optional); throws on anything else. */
export function fromBase64Url(value: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(value)) throw new TypeError('not base64url');
  const binary = atob(value.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, ''));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** `n` random bytes as base64url. */
export function randomToken(bytes = 32): string {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** SHA-256 of a string, as base64url. */
export async function sha256(value: string): Promise<string> {
  return toBase64Url(new Uint8Array(await crypto.subtle.digest('SHA-256', encoder.encode(value))));
}

/** Compares two strings in time that depends only on their lengths. */
export function timingSafeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  let diff = x.length ^ y.length;
  const n = Math.max(x.length, y.length);
  for (let i = 0; i < n; i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

/** What a sealed value is for; part of the key derivation and of the associated data. */
export type SealPurpose = 'session' | 'transaction' | 'token';

interface RingKey {
  /** 4 bytes naming the secret, so that the right key is tried first. */
  id: Uint8Array;
  secret: Uint8Array;
  derived: Map<string, Promise<CryptoKey>>;
}

/** Result of {@link KeyRing.open}. */
export interface Opened {
  plaintext: string;
  /** Sealed under an older secret: re-seal it with the newest. */
  stale: boolean;
}

const MIN_SECRET_BYTES = 32;

/**
 * Parses `LABGATE_SECRET`: comma-separated base64url secrets of at least 32 bytes, newest first.
 * @throws {TypeError} when missing or too short: labgate never starts with a weak or default secret.
 */
export function parseSecrets(value: string | readonly string[] | undefined): Uint8Array[] {
  const list = (typeof value === 'string' ? value.split(',') : (value ?? []))
    .map((s) => s.trim())
    .filter(Boolean);
  if (list.length === 0) {
    throw new TypeError(
      'labgate needs a secret: set LABGATE_SECRET (or the `secret` option) to at least 32 random bytes in base64url; `npx labgate secret` prints one',
    );
  }
  return list.map((item, i) => {
    let bytes: Uint8Array;
    try {
      bytes = fromBase64Url(item);
    } catch {
      throw new TypeError(`secret #${i + 1} is not base64url`);
    }
    if (bytes.length < MIN_SECRET_BYTES) {
      throw new TypeError(
        `secret #${i + 1} is ${bytes.length} bytes; labgate needs at least ${MIN_SECRET_BYTES} random bytes`,
      );
    }
    return bytes;
  });
}

/** A ring of secrets: the first seals, all open. */
export class KeyRing {
  readonly #keys: RingKey[];

  constructor(secrets: readonly Uint8Array[]) {
    if (secrets.length === 0) throw new TypeError('a key ring needs at least one secret');
    this.#keys = secrets.map((secret) => ({ id: new Uint8Array(4), secret, derived: new Map() }));
  }

  /** Creates a ring from `LABGATE_SECRET`'s format. */
  static async fromSecret(value: string | readonly string[] | undefined): Promise<KeyRing> {
    const ring = new KeyRing(parseSecrets(value));
    await ring.#init();
    return ring;
  }

  async #init(): Promise<void> {
    for (const key of this.#keys) {
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', key.secret as BufferSource));
      key.id = digest.slice(0, 4);
    }
  }

  #derive(key: RingKey, purpose: string): Promise<CryptoKey> {
    let derived = key.derived.get(purpose);
    if (!derived) {
      derived = crypto.subtle
        .importKey('raw', key.secret as BufferSource, 'HKDF', false, ['deriveKey'])
        .then((base) =>
          crypto.subtle.deriveKey(
            {
              name: 'HKDF',
              hash: 'SHA-256',
              salt: encoder.encode('labgate'),
              info: encoder.encode(`labgate v1 ${purpose}`),
            },
            base,
            { name: 'AES-GCM', length: 256 },
            false,
            ['encrypt', 'decrypt'],
          ),
        );
      key.derived.set(purpose, derived);
    }
    return derived;
  }

  /** Seals a string: base64url of key id (4) ‖ nonce (12) ‖ ciphertext and tag. */
  async seal(plaintext: string, purpose: SealPurpose, context = ''): Promise<string> {
    const key = this.#keys[0]!;
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const aesKey = await this.#derive(key, purpose);
    const ciphertext = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: 'AES-GCM', iv, additionalData: encoder.encode(`labgate:v1:${purpose}:${context}`) },
        aesKey,
        encoder.encode(plaintext),
      ),
    );
    const out = new Uint8Array(4 + 12 + ciphertext.length);
    out.set(key.id, 0);
    out.set(iv, 4);
    out.set(ciphertext, 16);
    return toBase64Url(out);
  }

  /** Opens a sealed string; null when it is malformed, tampered with, or sealed under an unknown secret. */
  async open(sealed: string, purpose: SealPurpose, context = ''): Promise<Opened | null> {
    let bytes: Uint8Array;
    try {
      bytes = fromBase64Url(sealed);
    } catch {
      return null;
    }
    if (bytes.length < 4 + 12 + 16) return null;
    const id = bytes.subarray(0, 4);
    const iv = bytes.subarray(4, 16);
    const ciphertext = bytes.subarray(16);
    for (const [index, key] of this.#keys.entries()) {
      if (!key.id.every((b, i) => b === id[i])) continue;
      try {
        const plain = await crypto.subtle.decrypt(
          {
            name: 'AES-GCM',
            iv: iv as BufferSource,
            additionalData: encoder.encode(`labgate:v1:${purpose}:${context}`),
          },
          await this.#derive(key, purpose),
          ciphertext as BufferSource,
        );
        return { plaintext: decoder.decode(plain), stale: index > 0 };
      } catch {
        return null;
      }
    }
    return null;
  }
}
