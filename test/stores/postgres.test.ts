/**
 * The conformance suite on the PostgreSQL store (a fresh schema per test), then what is its own:
 * migrations when four processes start at once on a fresh schema, and data kept across reopening.
 * Needs PostgreSQL at 127.0.0.1:5432 (see test/support/services.ts).
 */
import { expect, it } from 'vitest';
import { createPostgresStore } from '../../src/stores/postgres.js';
import { SCHEMA_VERSION } from '../../src/stores/sql.js';
import { createPgSchema, describeWithService, postgres } from '../support/services.js';
import { createClock } from './clock.js';
import { race } from './processes.js';
import { storeConformance } from './suite.js';

const service = await postgres();

describeWithService(service, 'postgres store', () => {
  storeConformance('postgres', async () => {
    const schema = await createPgSchema();
    const clock = createClock();
    try {
      const store = await createPostgresStore({ ...schema.config, now: clock.now });
      return {
        store,
        now: clock.now,
        advance: clock.advance,
        raw: () => schema.dump(),
        shared: { kind: 'postgres', config: { ...schema.config } },
        close: async () => {
          await store.close();
          await schema.drop();
        },
      };
    } catch (error) {
      await schema.drop();
      throw error;
    }
  });

  it('opens, migrates and stores with a clock that gives fractions of a millisecond', async () => {
    const schema = await createPgSchema();
    try {
      const store = await createPostgresStore({ ...schema.config, now: () => Date.now() + 0.5 });
      await store.put('k', 'v', 60_000.5);
      expect(await store.get('k')).toBe('v');
      await store.close();
      const [row] = await schema.query('SELECT applied_at FROM labgate_schema ORDER BY version DESC LIMIT 1');
      expect(Math.abs(Number(row!['applied_at']) - Date.now())).toBeLessThan(60_000);
    } finally {
      await schema.drop();
    }
  });

  it('keeps its tables in the schema of its search_path', async () => {
    const schema = await createPgSchema();
    try {
      const store = await createPostgresStore(schema.config);
      await store.put('k', 'v', 60_000);
      await store.close();
      const tables = await schema.query(
        'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
        [schema.schema],
      );
      expect(tables.map((t) => t['table_name'])).toEqual([
        'labgate_identities',
        'labgate_kv',
        'labgate_schema',
        'labgate_sessions',
        'labgate_users',
      ]);
    } finally {
      await schema.drop();
    }
  });

  it('migrations are idempotent: reopening applies nothing twice and keeps the data', async () => {
    const schema = await createPgSchema();
    try {
      for (let i = 0; i < 3; i++) {
        const store = await createPostgresStore(schema.config);
        if (i === 0) await store.put('kept', 'yes', 60_000);
        expect(await store.get('kept')).toBe('yes');
        await store.close();
      }
      const versions = await schema.query('SELECT version FROM labgate_schema ORDER BY version');
      expect(versions).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })));
    } finally {
      await schema.drop();
    }
  });

  it('4 processes starting at once on a fresh schema all succeed and migrate it once', async () => {
    const schema = await createPgSchema();
    try {
      const results = await race({ kind: 'postgres', config: { ...schema.config } }, { mode: 'open' }, 4);
      expect(results).toEqual(Array.from({ length: 4 }, () => ({ opened: true })));
      const versions = await schema.query(
        'SELECT version, COUNT(*)::int AS n FROM labgate_schema GROUP BY version ORDER BY version',
      );
      expect(versions).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => ({ version: i + 1, n: 1 })));
    } finally {
      await schema.drop();
    }
  }, 60_000);

  it('fails fast, with the driver error, when the server cannot be reached', async () => {
    await expect(
      createPostgresStore({ host: '127.0.0.1', port: 1, user: 'postgres', database: 'test' }),
    ).rejects.toThrow(/ECONNREFUSED|connect/);
  });
});
