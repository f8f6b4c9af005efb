/**
 * Each subpath stands alone: importing `labgate/<x>` in a fresh Node process loads no framework and
 * no database driver but its own (docs: README "Plain node:http", docs/stores.md: drivers load
 * lazily). Imported from the build through the package's own `exports`, in this repository, where
 * every framework and driver is installed: a stray import would load it, and be seen.
 * `npm test` builds first; run `npm run build` before running this file alone.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  codeSubpaths,
  describeRun,
  FRAMEWORKS_AND_DRIVERS,
  packagesOf,
  root,
  run,
  SUBPATH_PACKAGES,
} from './package.js';

const recorder = join(root, 'test', 'package', 'fixtures', 'loaded.mjs');
let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'labgate-loaded-'));
});
afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** Every file a fresh process loads when it imports `specifier`. */
async function loadedBy(specifier: string): Promise<string[]> {
  const log = join(scratch, `${specifier.replaceAll('/', '_')}.log`);
  const result = await run(process.execPath, [recorder, specifier, log], { cwd: root, timeoutMs: 30_000 });
  expect(result.code, describeRun(`import('${specifier}')`, result)).toBe(0);
  return (JSON.parse(result.stdout) as { modules: string[] }).modules;
}

/** The packages those files belong to (the innermost `node_modules/<name>`); labgate's own files are none. */
function packagesIn(files: readonly string[]): Set<string> {
  const marker = `${sep}node_modules${sep}`;
  const names = new Set<string>();
  for (const file of files) {
    const at = file.lastIndexOf(marker);
    if (at === -1) continue;
    const parts = file.slice(at + marker.length).split(sep);
    names.add(parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!);
  }
  return names;
}

const subpaths = codeSubpaths();

describe('the recorder', () => {
  it('sees a framework through the ES module loader and what it loads with require', async () => {
    const packages = packagesIn(await loadedBy('express'));
    expect(packages).toContain('express');
    // body-parser is required by express's CommonJS code: seen through require.cache only.
    expect(packages).toContain('body-parser');
  });

  it('sees a driver imported from an ES module', async () => {
    expect(packagesIn(await loadedBy('pg'))).toContain('pg');
  });
});

describe('each subpath loads no other framework or driver', () => {
  it('covers every code subpath of exports, each known to the table', () => {
    expect(subpaths.map((s) => s.subpath)).toEqual(expect.arrayContaining(['.', './express', './emulator']));
    for (const { subpath } of subpaths) expect(() => packagesOf(subpath)).not.toThrow();
    expect(FRAMEWORKS_AND_DRIVERS).toEqual(
      expect.arrayContaining([
        'express',
        'fastify',
        'hono',
        'next',
        'react',
        'pg',
        'ioredis',
        'better-sqlite3',
      ]),
    );
  });

  it.each(subpaths)('$specifier', async ({ subpath, specifier, target }) => {
    const own = packagesOf(subpath);
    const files = await loadedBy(specifier);
    // The import went through exports to the built module (not some other copy of labgate).
    expect(files).toContain(join(root, target));
    const strays = [...packagesIn(files)].filter(
      (name) => FRAMEWORKS_AND_DRIVERS.includes(name) && !own.includes(name),
    );
    expect(strays, `${specifier} may load only ${JSON.stringify(own)}`).toEqual([]);
  });

  it('names a subpath missing from the table, and how to fix it', () => {
    expect(SUBPATH_PACKAGES['./not-a-subpath']).toBeUndefined();
    expect(() => packagesOf('./not-a-subpath')).toThrow(/"\.\/not-a-subpath".*SUBPATH_PACKAGES/);
  });
});
