/**
 * `openStore`: every `LABGATE_STORE` form opens the store it names, the clock option reaches it, and
 * anything else is a TypeError that names the accepted forms and never echoes a password.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStore } from '../../src/core/store.js';
import { DEFAULT_STORE, describeStore, openStore } from '../../src/stores/index.js';
import { RedisStore } from '../../src/stores/redis.js';
import { SqlStore } from '../../src/stores/sql.js';
import {
  createPgSchema,
  createRedisPrefix,
  createTempDir,
  describeWithService,
  pgUrl,
  postgres,
  redis,
  redisUrl,
  type TempDir,
  uniqueName,
} from '../support/services.js';
import { createClock } from './clock.js';

const pg = await postgres();
const rd = await redis();

let dir: TempDir;
beforeAll(async () => {
  dir = await createTempDir('labgate-open-');
});
afterAll(() => dir.remove());

describe('openStore', () => {
  it('defaults to SQLite under ./.labgate', () => {
    expect(DEFAULT_STORE).toBe('sqlite:./.labgate/labgate.db');
  });

  it('memory: opens a memory store that takes the injected clock', async () => {
    for (const url of ['memory:', 'memory']) expect(await openStore(url)).toBeInstanceOf(MemoryStore);
    const clock = createClock();
    const store = await openStore('memory:', { now: clock.now });
    await store.put('k', 'v', 1000);
    clock.advance(1000);
    expect(await store.get('k')).toBeNull();
  });

  it('sqlite:PATH opens (and creates) that file, with the injected clock', async () => {
    const path = join(dir.path, uniqueName(), 'store.db');
    const clock = createClock();
    const store = await openStore(`sqlite:${path}`, { now: clock.now });
    try {
      expect(store).toBeInstanceOf(SqlStore);
      expect(existsSync(path)).toBe(true);
      await store.put('k', 'v', 1000);
      expect(await store.get('k')).toBe('v');
      clock.advance(1000);
      expect(await store.get('k')).toBeNull();
    } finally {
      await store.close?.();
    }
  });

  it('sqlite:///PATH is the absolute PATH', async () => {
    const path = join(dir.path, `${uniqueName()}.db`);
    const store = await openStore(`sqlite://${path}`);
    await store.close?.();
    expect(existsSync(path)).toBe(true);
  });

  it('sqlite://NAME/PATH is refused with the forms that work, and no file is made', async () => {
    const cwd = process.cwd();
    process.chdir(dir.path);
    try {
      const name = uniqueName();
      const error = await openStore(`sqlite://${name}/store.db`).then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(TypeError);
      const message = (error as TypeError).message;
      expect(message).toContain(`sqlite://${name}/store.db`);
      for (const form of [
        'sqlite:relative/path.db',
        'sqlite:/absolute/path.db',
        'sqlite:///absolute/path.db',
      ])
        expect(message).toContain(form);
      expect(existsSync(join(dir.path, name))).toBe(false);
      expect(existsSync(`/${name}`)).toBe(false);
      // A password in such a URL stays out of the message.
      const withPassword = await openStore(`sqlite://admin:pw-123@${name}/store.db`).then(
        () => null,
        (e: unknown) => e,
      );
      expect((withPassword as TypeError).message).toContain('names no file');
      expect((withPassword as TypeError).message).not.toContain('pw-123');
    } finally {
      process.chdir(cwd);
    }
  });

  it('sqlite:NAME/PATH is relative to the working directory', async () => {
    const cwd = process.cwd();
    process.chdir(dir.path);
    const name = uniqueName();
    try {
      const store = await openStore(`sqlite:${name}/store.db`);
      await store.close?.();
      expect(existsSync(join(dir.path, name, 'store.db'))).toBe(true);
    } finally {
      process.chdir(cwd);
    }
  });

  describeWithService(pg, 'postgres:// and postgresql://', () => {
    for (const scheme of ['postgres', 'postgresql']) {
      it(`${scheme}:// opens a PostgreSQL store on that database`, async () => {
        const schema = await createPgSchema();
        try {
          const url = pgUrl(schema.schema).replace(/^postgres:/, `${scheme}:`);
          const clock = createClock();
          const store = await openStore(url, { now: clock.now });
          try {
            expect(store).toBeInstanceOf(SqlStore);
            await store.put('k', 'v', 1000);
            expect(await store.get('k')).toBe('v');
            clock.advance(1000);
            expect(await store.get('k')).toBeNull();
          } finally {
            await store.close?.();
          }
          // The store's tables went to the schema named in the URL's options.
          expect(await schema.query('SELECT key FROM labgate_kv')).toEqual([{ key: 'k' }]);
        } finally {
          await schema.drop();
        }
      });
    }
  });

  describeWithService(rd, 'redis://', () => {
    it('redis:// opens a Redis store', async () => {
      const store = await openStore(redisUrl);
      try {
        expect(store).toBeInstanceOf(RedisStore);
        // Reads only: the default prefix may be shared with a real labgate on this Redis.
        expect(await store.get(`probe:${uniqueName()}`)).toBeNull();
      } finally {
        await store.close?.();
      }
    });

    it('redis://…?prefix= keeps the store under that prefix', async () => {
      const prefix = createRedisPrefix();
      const store = await openStore(`${redisUrl}/?prefix=${encodeURIComponent(prefix.prefix)}`);
      try {
        await store.put('k', 'v', 60_000);
        expect(await store.get('k')).toBe('v');
        expect(await prefix.keys()).toEqual([`${prefix.prefix}kv:k`]);
      } finally {
        await store.close?.();
        await prefix.clean();
      }
    });
  });

  describe('anything else is a TypeError naming the accepted forms', () => {
    const password = 'hunter2-Sup3rSecret';
    const cases = [
      `mysql://admin:${password}@db.example.com/app`,
      `mongodb+srv://admin:${password}@cluster0.example.net/app?retryWrites=true`,
      `postgres:/admin:${password}@db.example.com/app`,
      `postgres//admin:${password}@db.example.com/app`,
      `admin:${password}@db.example.com`,
      `http://db.example.com/?password=${password}`,
      'file:./labgate.db',
      './labgate.db',
      'sqlite',
      '',
    ];
    for (const url of cases) {
      it(JSON.stringify(url.replace(password, '<password>')), async () => {
        const error = await openStore(url).then(
          () => null,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(TypeError);
        const message = (error as TypeError).message;
        for (const form of ['sqlite:PATH', 'postgres://', 'redis://', 'memory:'])
          expect(message).toContain(form);
        expect(message).toContain('LABGATE_STORE');
        expect(message).not.toContain(password);
      });
    }
  });

  it('describeStore hides passwords', () => {
    expect(describeStore('postgres://admin:pw-123@db:5432/app')).toBe('postgres://admin:***@db:5432/app');
    expect(describeStore('redis://:pw-123@cache:6379/0')).toBe('redis://:***@cache:6379/0');
    expect(describeStore('postgres://admin@db/app?password=pw-123')).not.toContain('pw-123');
    expect(describeStore('postgres:/admin:pw-123@db/app')).not.toContain('pw-123');
    expect(describeStore('sqlite:./.labgate/labgate.db')).toBe('sqlite:./.labgate/labgate.db');
    expect(describeStore('memory:')).toBe('memory:');
  });
});
