/**
 * The conformance suite on the SQLite store (a fresh file per test), then what is SQLite's own: WAL
 * mode, idempotent migrations, and four processes opening one fresh file at once.
 */
import { chmodSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SCHEMA_VERSION } from '../../src/stores/sql.js';
import { createSqliteStore } from '../../src/stores/sqlite.js';
import { createTempDir, type TempDir, uniqueName } from '../support/services.js';
import { createClock } from './clock.js';
import { race } from './processes.js';
import { storeConformance } from './suite.js';

let dir: TempDir;
beforeAll(async () => {
  dir = await createTempDir('labgate-sqlite-');
});
afterAll(() => dir.remove());

function freshPath(): string {
  return join(dir.path, `${uniqueName()}.db`);
}

/** Opens a second, independent connection to a database file. */
function inspect<T>(path: string, fn: (db: Database.Database) => T): T {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

/** The permission bits of a file or folder. */
function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

/** Every row of every table (through a second connection), then the database files' bytes as text. */
async function dump(path: string): Promise<string> {
  const out = inspect(path, (db) => {
    const lines: string[] = [];
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as {
      name: string;
    }[];
    for (const { name } of tables) {
      lines.push(`# ${name}`);
      for (const row of db.prepare(`SELECT * FROM "${name}"`).raw().all() as unknown[][]) {
        lines.push(row.map(String).join('\t'));
      }
    }
    return lines;
  });
  for (const file of [path, `${path}-wal`]) {
    if (existsSync(file)) out.push(`# file ${file}`, (await readFile(file)).toString('latin1'));
  }
  return out.join('\n');
}

storeConformance('sqlite', async () => {
  const path = freshPath();
  const clock = createClock();
  const store = await createSqliteStore({ path, now: clock.now });
  return {
    store,
    now: clock.now,
    advance: clock.advance,
    raw: () => dump(path),
    shared: { kind: 'sqlite', path },
    close: () => store.close(),
  };
});

describe('sqlite store: its own', () => {
  it('runs in WAL mode, as another connection sees it', async () => {
    const path = freshPath();
    const store = await createSqliteStore({ path });
    try {
      await store.put('k', 'v', 60_000);
      expect(inspect(path, (db) => db.pragma('journal_mode', { simple: true }))).toBe('wal');
    } finally {
      await store.close();
    }
  });

  it('creates the folder of its file', async () => {
    const path = join(dir.path, uniqueName(), 'nested', 'labgate.db');
    const store = await createSqliteStore({ path });
    await store.close();
    expect(existsSync(path)).toBe(true);
  });

  it('creates its folders 0700 and the database, -wal and -shm files 0600 under a permissive umask', async () => {
    const top = join(dir.path, uniqueName());
    const path = join(top, 'nested', 'labgate.db');
    // umask 000: without an explicit mode, folders would be 0777 and files 0666.
    const umask = process.umask(0);
    let store: Awaited<ReturnType<typeof createSqliteStore>> | undefined;
    try {
      store = await createSqliteStore({ path });
      await store.put('k', 'v', 60_000);
      expect(mode(top)).toBe(0o700);
      expect(mode(join(top, 'nested'))).toBe(0o700);
      // While the store is open, WAL mode keeps all three files.
      for (const file of [path, `${path}-wal`, `${path}-shm`])
        expect([file, mode(file)]).toEqual([file, 0o600]);
    } finally {
      await store?.close();
      process.umask(umask);
    }
  });

  it('leaves a folder and a database it did not create as they were', async () => {
    const folder = join(dir.path, uniqueName());
    mkdirSync(folder);
    chmodSync(folder, 0o755);
    const path = join(folder, 'labgate.db');
    new Database(path).close();
    chmodSync(path, 0o640);
    const store = await createSqliteStore({ path });
    try {
      await store.put('k', 'v', 60_000);
      expect(mode(folder)).toBe(0o755);
      expect(mode(path)).toBe(0o640);
    } finally {
      await store.close();
    }
  });

  it('migrations are idempotent: reopening applies nothing twice and keeps the data', async () => {
    const path = freshPath();
    for (let i = 0; i < 3; i++) {
      const store = await createSqliteStore({ path });
      if (i === 0) await store.put('kept', 'yes', 60_000);
      expect(await store.get('kept')).toBe('yes');
      await store.close();
    }
    const versions = inspect(path, (db) =>
      db.prepare('SELECT version FROM labgate_schema ORDER BY version').all(),
    );
    expect(versions).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })));
  });

  it('refuses a database from a newer labgate', async () => {
    const path = freshPath();
    await (await createSqliteStore({ path })).close();
    const db = new Database(path);
    db.prepare('INSERT INTO labgate_schema (version, applied_at) VALUES (?, ?)').run(
      SCHEMA_VERSION + 1,
      Date.now(),
    );
    db.close();
    await expect(createSqliteStore({ path })).rejects.toThrow(/newer than this labgate/);
  });

  it('4 processes opening one fresh file at once all succeed and migrate it once', async () => {
    const path = freshPath();
    expect(existsSync(path)).toBe(false);
    const results = await race({ kind: 'sqlite', path }, { mode: 'open' }, 4);
    expect(results).toEqual(Array.from({ length: 4 }, () => ({ opened: true })));
    const versions = inspect(path, (db) =>
      db.prepare('SELECT version, COUNT(*) AS n FROM labgate_schema GROUP BY version').all(),
    );
    expect(versions).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => ({ version: i + 1, n: 1 })));
    expect(inspect(path, (db) => db.pragma('journal_mode', { simple: true }))).toBe('wal');
  }, 60_000);
});
