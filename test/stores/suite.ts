/**
 * The store conformance suite: the one contract every {@link Store} (memory, SQLite, PostgreSQL,
 * Redis) must pass. Each runner file calls {@link storeConformance} with a factory that opens a fresh,
 * isolated store for every test.
 *
 * Time: stores that take an injected clock are driven with `advance`; Redis expires keys on its own
 * clock, so its expiry cases use short real TTLs and wait with a bounded poll (never a fixed sleep).
 */
import { describe, expect, it } from 'vitest';
import { KeyRing, randomToken, sha256 } from '../../src/core/crypto.js';
import type { IdentityRecord, SessionRecord, SessionUser, Store } from '../../src/core/store.js';
import { pollUntil } from '../support/services.js';
import { race, type SharedStore } from './processes.js';

/** One fresh store, opened for one test. */
export interface StoreHarness {
  store: Store;
  /** The store's clock (epoch milliseconds). */
  now(): number;
  /** Moves the store's injected clock forward; absent when expiry follows real time (Redis). */
  advance?(ms: number): void;
  /** Every stored byte as text: SQL tables dumped (and database files), Redis keys and values. */
  raw(): Promise<string>;
  /** How another process opens this same store; absent for a store of one process (memory). */
  shared?: SharedStore;
  /** Closes the store and removes what the test left (schema, keys, files). */
  close(): Promise<void>;
}

export type StoreFactory = () => Promise<StoreHarness>;

/** Short lifetimes for the expiry cases: long enough to be observed alive, short enough to wait out. */
const SHORT_MS = 400;
const HOUR = 3_600_000;

/**
 * Lets `ms` pass for the store: advances its injected clock, or (real time) polls until `settled`
 * holds, failing after a deadline.
 */
async function elapse(h: StoreHarness, ms: number, what: string, settled: () => Promise<boolean>) {
  if (h.advance) {
    h.advance(ms);
    return;
  }
  await pollUntil(settled, { timeoutMs: ms + 5000, intervalMs: 20, what });
}

/** A session's user profile with every field, `overrides` on top. */
export function sessionUser(overrides: Partial<SessionUser> = {}): SessionUser {
  return {
    sub: '42',
    issuer: 'https://gitlab.example.com',
    id: 42,
    username: 'alice',
    name: 'Alice Liddell',
    email: null,
    emailVerified: false,
    avatarUrl: null,
    webUrl: null,
    createdAt: null,
    lastSignInAt: null,
    state: null,
    bot: null,
    external: null,
    twoFactorEnabled: null,
    groups: [],
    roles: [],
    ...overrides,
  };
}

const FULL_USER = sessionUser({
  sub: '7',
  id: 7,
  username: 'bob.builder',
  name: 'Bob "the" Builder — Ünïcødé ✓',
  email: 'bob@example.com',
  emailVerified: true,
  avatarUrl: 'https://gitlab.example.com/uploads/-/system/user/avatar/7/avatar.png',
  webUrl: 'https://gitlab.example.com/bob.builder',
  createdAt: '2020-01-02T03:04:05.000Z',
  lastSignInAt: '2024-06-07T08:09:10.000Z',
  state: 'active',
  bot: false,
  external: true,
  twoFactorEnabled: true,
  groups: ['acme', 'acme/platform', 'acme/platform/infra', 'other-group'],
  roles: ['admin', 'deployer'],
});

function session(h: StoreHarness, overrides: Partial<SessionRecord> = {}): SessionRecord {
  const now = h.now();
  return {
    id: randomToken(16),
    secretHash: randomToken(32),
    userId: 'user-1',
    identity: 'https://gitlab.example.com 42',
    user: sessionUser(),
    tokens: `sealed.${randomToken(48)}`,
    createdAt: now,
    expiresAt: now + 8 * HOUR,
    idleExpiresAt: now + HOUR,
    ...overrides,
  };
}

function byAccount(a: IdentityRecord, b: IdentityRecord): number {
  return a.issuer === b.issuer ? a.sub.localeCompare(b.sub) : a.issuer.localeCompare(b.issuer);
}

/** Runs `fn` on batches of at most `size` items at once. */
async function inBatches<T, R>(items: readonly T[], size: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += size)
    out.push(...(await Promise.all(items.slice(i, i + size).map(fn))));
  return out;
}

/**
 * Defines the conformance suite for one store. `factory` opens a fresh, isolated store per test.
 *
 * @example
 * ```ts
 * storeConformance('sqlite', async () => {
 *   const store = await createSqliteStore({ path, now: clock.now });
 *   return { store, now: clock.now, advance: clock.advance, raw: …, shared: { kind: 'sqlite', path }, close: … };
 * });
 * ```
 */
export function storeConformance(
  name: string,
  factory: StoreFactory,
  options: {
    /** Race separate OS processes on one store (false for the memory store, which lives in one). */
    processes?: boolean;
  } = {},
): void {
  describe(`${name} store: conformance`, () => {
    /** Opens a store for one test and always closes it, even when the test fails. */
    function test(title: string, fn: (h: StoreHarness) => Promise<void>, timeout?: number): void {
      it(
        title,
        async () => {
          const h = await factory();
          try {
            await fn(h);
          } finally {
            await h.close();
          }
        },
        timeout,
      );
    }

    describe('values', () => {
      test('put, get and delete', async ({ store }) => {
        expect(await store.get('missing')).toBeNull();
        await store.put('k', 'v1', HOUR);
        expect(await store.get('k')).toBe('v1');
        expect(await store.get('k')).toBe('v1'); // get does not consume
        await store.put('k', 'v2', HOUR);
        expect(await store.get('k')).toBe('v2');
        await store.delete('k');
        expect(await store.get('k')).toBeNull();
        await store.delete('k'); // deleting what is absent is fine
        await store.delete('never-there');
      });

      test('keys and values are kept byte for byte', async ({ store }) => {
        const key = `state:ä ö/💥\n"'%*?[x]{}\\ ${'k'.repeat(200)}`;
        const value = `{"json":true} ✓ 💥 \u0001 ${'v'.repeat(64 * 1024)}`;
        await store.put(key, value, HOUR);
        expect(await store.get(key)).toBe(value);
        expect(await store.get(`${key} `)).toBeNull();
        expect(await store.take(key)).toBe(value);
        await store.put('', '', HOUR);
        expect(await store.get('')).toBe('');
      });

      test('add stores only when the key is absent', async ({ store }) => {
        expect(await store.add('lock', 'first', HOUR)).toBe(true);
        expect(await store.add('lock', 'second', HOUR)).toBe(false);
        expect(await store.get('lock')).toBe('first');
        await store.delete('lock');
        expect(await store.add('lock', 'third', HOUR)).toBe(true);
        expect(await store.get('lock')).toBe('third');
      });

      test('add over an expired value succeeds', async (h) => {
        const { store } = h;
        await store.put('k', 'old', SHORT_MS);
        expect(await store.add('k', 'too-early', HOUR)).toBe(false);
        await elapse(h, SHORT_MS, 'k to expire', async () => (await store.get('k')) === null);
        expect(await store.add('k', 'new', HOUR)).toBe(true);
        expect(await store.get('k')).toBe('new');
        expect(await store.add('k', 'newer', HOUR)).toBe(false);
      });

      test('take returns the value once, then null', async ({ store }) => {
        expect(await store.take('missing')).toBeNull();
        await store.put('k', 'v', HOUR);
        expect(await store.take('k')).toBe('v');
        expect(await store.take('k')).toBeNull();
        expect(await store.get('k')).toBeNull();
        expect(await store.add('k', 'again', HOUR)).toBe(true);
      });

      test('take of an expired value is null', async (h) => {
        const { store } = h;
        await store.put('k', 'v', SHORT_MS);
        await store.put('control', 'v', SHORT_MS);
        await elapse(h, SHORT_MS, 'control to expire', async () => (await store.get('control')) === null);
        expect(await store.take('k')).toBeNull();
        expect(await store.get('k')).toBeNull();
      });

      test('values stored by put and add expire', async (h) => {
        const { store } = h;
        await store.put('put', 'p', SHORT_MS);
        expect(await store.add('add', 'a', SHORT_MS)).toBe(true);
        await store.put('long', 'l', HOUR);
        expect(await store.get('put')).toBe('p');
        expect(await store.get('add')).toBe('a');
        if (h.advance) {
          // The exact boundary: alive 1 ms before the end, gone at the end.
          h.advance(SHORT_MS - 1);
          expect(await store.get('put')).toBe('p');
          expect(await store.get('add')).toBe('a');
          h.advance(1);
        } else {
          await elapse(h, SHORT_MS, 'put and add values to expire', async () => {
            return (await store.get('put')) === null && (await store.get('add')) === null;
          });
        }
        expect(await store.get('put')).toBeNull();
        expect(await store.get('add')).toBeNull();
        expect(await store.take('add')).toBeNull();
        expect(await store.get('long')).toBe('l');
      });

      test('lifetimes need not be whole milliseconds', async ({ store }) => {
        // Lifetimes are computed (`maxAge * 1000`, `expiresAt - now`): a fraction must not break a write.
        await store.put('put', 'p', 60_000.5);
        expect(await store.add('add', 'a', 1.5 * 60_000 + 0.25)).toBe(true);
        expect(await store.get('put')).toBe('p');
        expect(await store.take('add')).toBe('a');
      });

      test('put replaces the lifetime with the value', async (h) => {
        const { store } = h;
        await store.put('k', 'short', SHORT_MS);
        await store.put('k', 'long', HOUR);
        await store.put('control', 'c', SHORT_MS);
        await elapse(h, SHORT_MS, 'control to expire', async () => (await store.get('control')) === null);
        expect(await store.get('k')).toBe('long');
      });
    });

    describe('concurrency', () => {
      test('50 concurrent takes of one key: exactly one winner', async ({ store }) => {
        await store.put('state:race', 'verifier', HOUR);
        const results = await Promise.all(Array.from({ length: 50 }, () => store.take('state:race')));
        expect(results.filter((r) => r !== null)).toEqual(['verifier']);
        expect(await store.get('state:race')).toBeNull();
      });

      test('50 concurrent adds of one key: exactly one true, and its value stays', async ({ store }) => {
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) => store.add('lock:refresh', `holder-${i}`, HOUR)),
        );
        expect(results.filter(Boolean)).toHaveLength(1);
        expect(await store.get('lock:refresh')).toBe(`holder-${results.indexOf(true)}`);
      });

      test('calls made while a sign-in is being recorded all succeed', async (h) => {
        const { store } = h;
        const work: Promise<unknown>[] = [];
        for (let i = 0; i < 20; i++) {
          const profile = sessionUser({ sub: String(i), id: i });
          work.push(
            store.upsertIdentity(
              { issuer: profile.issuer, sub: profile.sub, profile, updatedAt: h.now() },
              { newUserId: `u-${i}` },
            ),
          );
          // Let the sign-in start (and wait on its own statements) before the next calls arrive.
          await Promise.resolve();
          work.push(store.put(`k-${i}`, `v-${i}`, HOUR));
          work.push(store.setSession(session(h, { userId: `u-${i}` })));
        }
        const results = await Promise.allSettled(work);
        expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
        for (let i = 0; i < 20; i++) {
          expect(await store.get(`k-${i}`)).toBe(`v-${i}`);
          expect(await store.listIdentities(`u-${i}`)).toHaveLength(1);
          expect(await store.listSessions(`u-${i}`)).toHaveLength(1);
        }
      });

      if (options.processes === false) return;

      test('take across 3 processes: 20 keys, exactly one winner each', async (h) => {
        if (!h.shared)
          throw new Error(`the ${name} harness has no \`shared\` description for child processes`);
        const keys = Array.from({ length: 20 }, (_, i) => `state:${i}:${randomToken(8)}`);
        for (const [i, key] of keys.entries()) await h.store.put(key, `value-${i}`, HOUR);
        const results = await race(h.shared, { mode: 'take', keys }, 3);
        for (const result of results) expect(result.error).toBeUndefined();
        for (const [i, key] of keys.entries()) {
          const winners = results.map((r) => r.taken?.[key] ?? null).filter((v) => v !== null);
          expect(winners, key).toEqual([`value-${i}`]);
          expect(await h.store.get(key)).toBeNull();
        }
      }, 60_000);
    });

    describe('sessions', () => {
      test('set and get round-trip every field', async (h) => {
        const { store } = h;
        const sparse = session(h, { user: sessionUser({ groups: ['acme', 'acme/platform'] }) });
        const full = session(h, {
          userId: 'user-2',
          identity: 'https://gitlab.example.com 7',
          user: FULL_USER,
        });
        await store.setSession(sparse);
        await store.setSession(full);
        expect(await store.getSession(sparse.id)).toStrictEqual(sparse);
        expect(await store.getSession(full.id)).toStrictEqual(full);
        expect(await store.getSession('no-such-session')).toBeNull();
      });

      test('times with a fraction of a millisecond (an injected clock) are kept to the millisecond', async (h) => {
        const { store } = h;
        const now = h.now();
        const record = session(h, {
          createdAt: now + 0.25,
          expiresAt: now + 8 * HOUR + 0.5,
          idleExpiresAt: now + HOUR + 0.75,
        });
        await store.setSession(record);
        await store.touchSession(record.id, now + 2 * HOUR + 0.5);
        const kept = await store.getSession(record.id);
        expect(kept).not.toBeNull();
        for (const [field, expected] of [
          ['createdAt', now + 0.25],
          ['expiresAt', now + 8 * HOUR + 0.5],
          ['idleExpiresAt', now + 2 * HOUR + 0.5],
        ] as const)
          expect(Math.abs(kept![field] - expected), field).toBeLessThan(1);
        const identity = {
          issuer: 'https://gitlab.example.com',
          sub: '42',
          profile: sessionUser(),
          updatedAt: now + 0.5,
        };
        const userId = await store.upsertIdentity(identity, { newUserId: 'u-fraction' });
        const [listed] = await store.listIdentities(userId);
        expect(Math.abs(listed!.updatedAt - identity.updatedAt)).toBeLessThan(1);
      });

      test('set replaces a session', async (h) => {
        const { store } = h;
        const record = session(h);
        await store.setSession(record);
        const refreshed = { ...record, tokens: `sealed.${randomToken(48)}`, user: FULL_USER };
        await store.setSession(refreshed);
        expect(await store.getSession(record.id)).toStrictEqual(refreshed);
        expect(await store.listSessions(record.userId)).toStrictEqual([refreshed]);
      });

      test('set replacing a session with another user moves it to that user', async (h) => {
        const { store } = h;
        const record = session(h, { userId: 'alice' });
        await store.setSession(record);
        const moved = { ...record, userId: 'bob' };
        await store.setSession(moved);
        expect(await store.listSessions('alice')).toEqual([]);
        expect(await store.listSessions('bob')).toStrictEqual([moved]);
        expect(await store.deleteUserSessions('alice')).toBe(0);
        expect(await store.getSession(record.id)).toStrictEqual(moved);
        expect(await store.deleteUserSessions('bob')).toBe(1);
        expect(await store.getSession(record.id)).toBeNull();
      });

      test('a session ends at its absolute expiry', async (h) => {
        const { store } = h;
        const now = h.now();
        const record = session(h, { expiresAt: now + SHORT_MS, idleExpiresAt: now + HOUR });
        await store.setSession(record);
        expect(await store.getSession(record.id)).toStrictEqual(record);
        if (h.advance) {
          h.advance(SHORT_MS - 1);
          expect(await store.getSession(record.id)).toStrictEqual(record);
          h.advance(1);
        }
        await elapse(
          h,
          SHORT_MS,
          'the session to end',
          async () => (await store.getSession(record.id)) === null,
        );
        expect(await store.getSession(record.id)).toBeNull();
        expect(await store.listSessions(record.userId)).toEqual([]);
      });

      test('a session ends at its idle expiry', async (h) => {
        const { store } = h;
        const now = h.now();
        const record = session(h, { expiresAt: now + 8 * HOUR, idleExpiresAt: now + SHORT_MS });
        await store.setSession(record);
        expect(await store.getSession(record.id)).toStrictEqual(record);
        if (h.advance) {
          h.advance(SHORT_MS - 1);
          expect(await store.getSession(record.id)).toStrictEqual(record);
          h.advance(1);
        }
        await elapse(
          h,
          SHORT_MS,
          'the session to idle out',
          async () => (await store.getSession(record.id)) === null,
        );
        expect(await store.getSession(record.id)).toBeNull();
        expect(await store.listSessions(record.userId)).toEqual([]);
      });

      test('touch moves only the idle expiry, and keeps the session past its old one', async (h) => {
        const { store } = h;
        const now = h.now();
        const record = session(h, { idleExpiresAt: now + SHORT_MS });
        const control = session(h, { userId: 'control', idleExpiresAt: now + SHORT_MS });
        await store.setSession(record);
        await store.setSession(control);
        await store.touchSession(record.id, now + HOUR);
        const touched = { ...record, idleExpiresAt: now + HOUR };
        expect(await store.getSession(record.id)).toStrictEqual(touched);
        await elapse(h, SHORT_MS, 'the untouched session to idle out', async () => {
          return (await store.getSession(control.id)) === null;
        });
        expect(await store.getSession(control.id)).toBeNull();
        expect(await store.getSession(record.id)).toStrictEqual(touched);
        expect(await store.listSessions(record.userId)).toStrictEqual([touched]);
      });

      test('touch never resurrects a deleted session', async (h) => {
        const { store } = h;
        const record = session(h);
        await store.setSession(record);
        await store.deleteSession(record.id);
        await store.touchSession(record.id, h.now() + HOUR);
        await store.touchSession('never-existed', h.now() + HOUR);
        expect(await store.getSession(record.id)).toBeNull();
        expect(await store.getSession('never-existed')).toBeNull();
        expect(await store.listSessions(record.userId)).toEqual([]);
      });

      test('touch never resurrects an expired session', async (h) => {
        const { store } = h;
        const now = h.now();
        const idle = session(h, { idleExpiresAt: now + SHORT_MS });
        const ended = session(h, { expiresAt: now + SHORT_MS, idleExpiresAt: now + SHORT_MS });
        const control = session(h, { userId: 'control', idleExpiresAt: now + SHORT_MS });
        for (const record of [idle, ended, control]) await store.setSession(record);
        // Wait on the control only: reading `idle` or `ended` first could let a store forget them on read.
        await elapse(h, SHORT_MS, 'the control session to idle out', async () => {
          return (await store.getSession(control.id)) === null;
        });
        await store.touchSession(idle.id, h.now() + HOUR);
        await store.touchSession(ended.id, h.now() + HOUR);
        expect(await store.getSession(idle.id)).toBeNull();
        expect(await store.getSession(ended.id)).toBeNull();
        expect(await store.listSessions(idle.userId)).toEqual([]);
      });

      test('deleteSession ends that session only', async (h) => {
        const { store } = h;
        const a = session(h);
        const b = session(h);
        await store.setSession(a);
        await store.setSession(b);
        await store.deleteSession(a.id);
        await store.deleteSession('no-such-session');
        expect(await store.getSession(a.id)).toBeNull();
        expect(await store.getSession(b.id)).toStrictEqual(b);
        expect(await store.listSessions(a.userId)).toStrictEqual([b]);
      });

      test("listSessions returns a user's live sessions, oldest first", async (h) => {
        const { store } = h;
        const now = h.now();
        const second = session(h, { userId: 'alice', createdAt: now - 2000 });
        const third = session(h, { userId: 'alice', createdAt: now - 1000 });
        const first = session(h, { userId: 'alice', createdAt: now - 3000, user: FULL_USER });
        const idle = session(h, { userId: 'alice', createdAt: now - 4000, idleExpiresAt: now + SHORT_MS });
        const bobs = session(h, { userId: 'bob', createdAt: now - 5000 });
        // Written out of order, so that an insertion-ordered store fails.
        for (const record of [second, third, bobs, idle, first]) await store.setSession(record);
        expect(await store.listSessions('alice')).toStrictEqual([idle, first, second, third]);
        const control = session(h, { userId: 'control', idleExpiresAt: now + SHORT_MS });
        await store.setSession(control);
        await elapse(h, SHORT_MS, 'the idle session to end', async () => {
          return (await store.getSession(control.id)) === null;
        });
        expect(await store.listSessions('alice')).toStrictEqual([first, second, third]);
        expect(await store.listSessions('bob')).toStrictEqual([bobs]);
        expect(await store.listSessions('nobody')).toEqual([]);
        expect(await store.listSessions('ALICE')).toEqual([]);
      });

      test("deleteUserSessions ends a user's live sessions, counts them, and leaves other users'", async (h) => {
        const { store } = h;
        const now = h.now();
        const alice = [
          session(h, { userId: 'alice' }),
          session(h, { userId: 'alice' }),
          session(h, { userId: 'alice' }),
        ];
        const idle = session(h, { userId: 'alice', idleExpiresAt: now + SHORT_MS });
        const bob = [
          session(h, { userId: 'bob', createdAt: now - 2 }),
          session(h, { userId: 'bob', createdAt: now - 1 }),
        ];
        for (const record of [...alice, idle, ...bob]) await store.setSession(record);
        // The idle session has already ended, so it is not one of those deleteUserSessions ends.
        await elapse(
          h,
          SHORT_MS,
          "alice's idle session to end",
          async () => (await store.getSession(idle.id)) === null,
        );
        expect(await store.deleteUserSessions('alice')).toBe(3);
        expect(await store.listSessions('alice')).toEqual([]);
        for (const record of alice) expect(await store.getSession(record.id)).toBeNull();
        expect(await store.listSessions('bob')).toStrictEqual(bob);
        for (const record of bob) expect(await store.getSession(record.id)).toStrictEqual(record);
        expect(await store.deleteUserSessions('alice')).toBe(0);
        expect(await store.deleteUserSessions('nobody')).toBe(0);
      });

      test('10 000 sessions over 100 users are written and read back', async (h) => {
        const { store } = h;
        const now = h.now();
        const records = Array.from({ length: 10_000 }, (_, i) =>
          session(h, {
            userId: `user-${i % 100}`,
            createdAt: now - 10_000 + i,
            user: i % 2 ? FULL_USER : sessionUser({ groups: [`group-${i}`] }),
          }),
        );
        const started = performance.now();
        await inBatches(records, 100, (record) => store.setSession(record));
        const written = performance.now();
        const read = await inBatches(records, 100, (record) => store.getSession(record.id));
        const elapsed = performance.now() - started;
        console.info(
          `[${name}] 10 000 sessions: written in ${Math.round(written - started)} ms, read in ${Math.round(performance.now() - written)} ms`,
        );
        expect(read).toStrictEqual(records);
        expect(elapsed).toBeLessThan(30_000);
        const listed = await store.listSessions('user-37');
        expect(listed).toHaveLength(100);
        expect(listed).toStrictEqual(records.filter((r) => r.userId === 'user-37'));
      }, 90_000);
    });

    describe('identities', () => {
      const gitlab = 'https://gitlab.example.com';
      const selfManaged = 'https://gitlab.acme.internal';
      const account = (issuer: string, profile: SessionUser, updatedAt: number) => ({
        issuer,
        sub: profile.sub,
        profile: { ...profile, issuer },
        updatedAt,
      });

      test('a first sign-in creates a user', async (h) => {
        const { store } = h;
        const first = account(gitlab, FULL_USER, h.now());
        expect(await store.upsertIdentity(first, { newUserId: 'u-new' })).toBe('u-new');
        expect(await store.listIdentities('u-new')).toStrictEqual([{ ...first, userId: 'u-new' }]);
        expect(await store.listIdentities('someone-else')).toEqual([]);
      });

      test('the same account again keeps its user and replaces the profile', async (h) => {
        const { store } = h;
        const before = account(gitlab, FULL_USER, h.now());
        expect(await store.upsertIdentity(before, { newUserId: 'u-1' })).toBe('u-1');
        const after = account(
          gitlab,
          { ...FULL_USER, name: 'Robert Builder', email: null, groups: ['acme'], twoFactorEnabled: null },
          h.now() + 1000,
        );
        expect(await store.upsertIdentity(after, { newUserId: 'u-2' })).toBe('u-1');
        expect(await store.listIdentities('u-1')).toStrictEqual([{ ...after, userId: 'u-1' }]);
        expect(await store.listIdentities('u-2')).toEqual([]);
      });

      test('linkTo links a second GitLab account (other issuer, same sub) to the same user', async (h) => {
        const { store } = h;
        const first = account(gitlab, FULL_USER, h.now());
        const second = account(selfManaged, FULL_USER, h.now() + 1);
        expect(await store.upsertIdentity(first, { newUserId: 'u-1' })).toBe('u-1');
        // Same numeric id on another instance is another account: without linkTo, another user.
        expect(await store.upsertIdentity(second, { linkTo: 'u-1', newUserId: 'u-2' })).toBe('u-1');
        const linked = (await store.listIdentities('u-1')).sort(byAccount);
        expect(linked).toStrictEqual(
          [
            { ...first, userId: 'u-1' },
            { ...second, userId: 'u-1' },
          ].sort(byAccount),
        );
        // An account already linked keeps its user: linkTo never steals it.
        expect(await store.upsertIdentity(first, { linkTo: 'u-thief', newUserId: 'u-3' })).toBe('u-1');
        expect(await store.listIdentities('u-thief')).toEqual([]);
        expect(await store.listIdentities('u-1')).toHaveLength(2);
      });

      test('an account on another instance with the same sub is another user', async (h) => {
        const { store } = h;
        expect(await store.upsertIdentity(account(gitlab, FULL_USER, h.now()), { newUserId: 'u-1' })).toBe(
          'u-1',
        );
        expect(
          await store.upsertIdentity(account(selfManaged, FULL_USER, h.now()), { newUserId: 'u-2' }),
        ).toBe('u-2');
        expect((await store.listIdentities('u-1')).map((i) => i.issuer)).toEqual([gitlab]);
        expect((await store.listIdentities('u-2')).map((i) => i.issuer)).toEqual([selfManaged]);
      });

      test('concurrent first sign-ins of one account agree on one user', async (h) => {
        const { store } = h;
        const first = account(gitlab, FULL_USER, h.now());
        const ids = await Promise.all(
          Array.from({ length: 10 }, (_, i) => store.upsertIdentity(first, { newUserId: `u-${i}` })),
        );
        expect(new Set(ids).size).toBe(1);
        expect(await store.listIdentities(ids[0]!)).toStrictEqual([{ ...first, userId: ids[0] }]);
      });
    });

    describe('secrets at rest', () => {
      test('tokens are stored sealed, and the cookie secret only as a hash', async (h) => {
        const { store } = h;
        const keys = await KeyRing.fromSecret(randomToken(32));
        const id = randomToken(16);
        const cookieSecret = randomToken(32);
        const accessToken = `glpat-ACCESS-${randomToken(12)}`;
        const refreshToken = `glrt-REFRESH-${randomToken(12)}`;
        const tokens = await keys.seal(
          JSON.stringify({
            accessToken,
            refreshToken,
            expiresAt: h.now() + 7200_000,
            scope: 'openid read_api',
          }),
          'token',
          id,
        );
        const record = session(h, { id, secretHash: await sha256(cookieSecret), tokens, user: FULL_USER });
        await store.setSession(record);
        await store.upsertIdentity(
          { issuer: FULL_USER.issuer, sub: FULL_USER.sub, profile: FULL_USER, updatedAt: h.now() },
          { newUserId: record.userId },
        );
        await store.put(`state:${randomToken(8)}`, 'pkce-verifier', HOUR);

        const raw = await h.raw();
        expect(raw).toContain(id);
        expect(raw).toContain(record.secretHash);
        expect(raw).toContain(tokens);
        expect(raw).not.toContain(accessToken);
        expect(raw).not.toContain(refreshToken);
        expect(raw).not.toContain(cookieSecret);
        // What was stored still opens, for this session only.
        const stored = await store.getSession(id);
        expect(JSON.parse((await keys.open(stored!.tokens, 'token', id))!.plaintext)).toMatchObject({
          accessToken,
          refreshToken,
        });
        expect(await keys.open(stored!.tokens, 'token', 'another-session')).toBeNull();
      });
    });
  });
}
