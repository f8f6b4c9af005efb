/**
 * The conformance suite on the memory store. Its `raw()` is everything the store answers for every
 * key, session and user the test handed it: the memory store keeps its maps private and keeps values
 * exactly as given, so that is all of its state the test can reach.
 */
import { MemoryStore, type Store } from '../../src/core/store.js';
import { createClock } from './clock.js';
import { storeConformance } from './suite.js';

/** Wraps a store so that every key, session id and user id it is given is remembered for `raw()`. */
function recording(store: Store) {
  const keys = new Set<string>();
  const sessions = new Set<string>();
  const users = new Set<string>();
  const recorded: Store = {
    put: (key, value, ttl) => {
      keys.add(key);
      return store.put(key, value, ttl);
    },
    add: (key, value, ttl) => {
      keys.add(key);
      return store.add(key, value, ttl);
    },
    take: (key) => store.take(key),
    get: (key) => store.get(key),
    delete: (key) => store.delete(key),
    setSession: (record) => {
      sessions.add(record.id);
      users.add(record.userId);
      return store.setSession(record);
    },
    getSession: (id) => store.getSession(id),
    touchSession: (id, idle) => store.touchSession(id, idle),
    deleteSession: (id) => store.deleteSession(id),
    listSessions: (userId) => store.listSessions(userId),
    deleteUserSessions: (userId) => store.deleteUserSessions(userId),
    upsertIdentity: async (identity, options) => {
      const userId = await store.upsertIdentity(identity, options);
      users.add(userId);
      return userId;
    },
    listIdentities: (userId) => store.listIdentities(userId),
  };
  async function raw(): Promise<string> {
    const out: string[] = [];
    for (const key of keys) out.push(`${key}\t${await store.get(key)}`);
    for (const id of sessions) out.push(JSON.stringify(await store.getSession(id)));
    for (const user of users) out.push(JSON.stringify(await store.listIdentities(user)));
    return out.join('\n');
  }
  return { store: recorded, raw };
}

storeConformance(
  'memory',
  async () => {
    const clock = createClock();
    const { store, raw } = recording(new MemoryStore({ now: clock.now }));
    return { store, now: clock.now, advance: clock.advance, raw, close: async () => undefined };
  },
  { processes: false },
);
