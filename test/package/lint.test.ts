/**
 * The published package's metadata, checked on the tarball `npm pack` makes: publint (exports,
 * files, fields) and arethetypeswrong (every subpath's types resolve to what Node loads). Both read
 * the one tarball of this run (package.ts) rather than packing again: `attw --pack` runs a plain
 * `npm pack`, whose `prepare` script would rebuild dist/ under the other test files.
 * `npm test` builds first; run `npm run build` before running this file alone.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { publint } from 'publint';
import { formatMessage } from 'publint/utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeRun, type PackageJson, packageJson, packedTarball, root, run } from './package.js';

const attw = join(root, 'node_modules', '.bin', 'attw');

/**
 * labgate is ESM only (`"type": "module"`, no `require` condition, Node ≥ 20.19), so the
 * `esm-only` profile: it leaves out `node10` resolution (which knows nothing of `exports`, and so of
 * any subpath) and CommonJS callers under `node16` (who load an ES module with `import()` or, on
 * Node ≥ 20.19, `require(esm)`). Every other finding fails the test.
 */
const ATTW_PROFILE = ['--profile', 'esm-only'];
const IGNORED_RESOLUTIONS = new Set(['node10', 'node16-cjs']);

interface AttwReport {
  analysis?: { entrypoints: Record<string, unknown> };
  problems?: Record<string, { kind: string; entrypoint?: string; resolutionKind?: string }[]>;
}

let tarball: string;
let scratch: string;
let reports = 0;
beforeAll(async () => {
  tarball = await packedTarball();
  scratch = mkdtempSync(join(tmpdir(), 'labgate-lint-'));
}, 150_000);
afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** The tarball again, with its package.json changed: a package that is wrong on purpose. */
async function brokenTarball(change: (pkg: PackageJson) => void): Promise<string> {
  const dir = mkdtempSync(join(scratch, 'broken-'));
  const untar = await run('tar', ['-xzf', tarball, '-C', dir], { cwd: dir, timeoutMs: 30_000 });
  expect(untar.code, describeRun('tar -x', untar)).toBe(0);
  const file = join(dir, 'package', 'package.json');
  const pkg = JSON.parse(readFileSync(file, 'utf8')) as PackageJson;
  change(pkg);
  writeFileSync(file, JSON.stringify(pkg, null, 2));
  const out = join(dir, 'broken.tgz');
  const tar = await run('tar', ['-czf', out, '-C', dir, 'package'], { cwd: dir, timeoutMs: 30_000 });
  expect(tar.code, describeRun('tar -c', tar)).toBe(0);
  return out;
}

async function lint(file: string) {
  const buffer = readFileSync(file);
  const tarballBytes = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const result = await publint({ pack: { tarball: tarballBytes as ArrayBuffer }, level: 'suggestion' });
  return {
    pkg: result.pkg as PackageJson,
    messages: result.messages.map((m) => `${m.type}: ${formatMessage(m, result.pkg, { color: false })}`),
  };
}

async function typesReport(file: string): Promise<{ code: number | null; report: AttwReport; raw: string }> {
  const result = await run(attw, [file, ...ATTW_PROFILE, '--format', 'json'], {
    cwd: root,
    timeoutMs: 60_000,
    // attw exits at once after writing a report of some 300 kB: a pipe would lose its end.
    stdoutFile: join(scratch, `attw-${++reports}.json`),
  });
  let report: AttwReport = {};
  try {
    report = JSON.parse(result.stdout) as AttwReport;
  } catch {
    // Not JSON: the assertions below show the raw output.
  }
  return { code: result.code, report, raw: describeRun('attw', result) };
}

/** The problems the profile does not leave out, as readable lines. */
function counted(report: AttwReport): string[] {
  return Object.values(report.problems ?? {})
    .flat()
    .filter((p) => !(p.resolutionKind && IGNORED_RESOLUTIONS.has(p.resolutionKind)))
    .map((p) => `${p.kind} ${p.entrypoint ?? ''} ${p.resolutionKind ?? ''}`.trim());
}

describe('publint', () => {
  it('finds nothing in the packed package, not even a suggestion', async () => {
    const { pkg, messages } = await lint(tarball);
    // It read this package's manifest, exports included (the check is not of an empty package).
    expect(pkg.exports).toEqual(packageJson().exports);
    expect(messages).toEqual([]);
  });

  it('reports an export that points at a file the tarball lacks (the check bites)', async () => {
    const broken = await brokenTarball((pkg) => {
      pkg.exports['./express'] = { types: './dist/adapters/gone.d.ts', default: './dist/adapters/gone.js' };
    });
    const { messages } = await lint(broken);
    expect(messages.join('\n')).toMatch(/gone\.js/);
  });
});

describe('arethetypeswrong (esm-only profile)', () => {
  it('resolves the types of every subpath of exports, under node16 (ESM) and bundlers', async () => {
    const { code, report, raw } = await typesReport(tarball);
    expect(Object.keys(report.analysis?.entrypoints ?? {}), raw).toEqual(Object.keys(packageJson().exports));
    expect(counted(report), raw).toEqual([]);
    expect(code, raw).toBe(0);
  });

  it('fails on a subpath whose types are missing (the check bites)', async () => {
    const broken = await brokenTarball((pkg) => {
      pkg.exports['./express'] = {
        types: './dist/adapters/gone.d.ts',
        default: './dist/adapters/express.js',
      };
    });
    const { code, report, raw } = await typesReport(broken);
    expect(counted(report).join('\n'), raw).toMatch(/\.\/express/);
    expect(code, raw).not.toBe(0);
  });
});
