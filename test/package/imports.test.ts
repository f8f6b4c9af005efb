/**
 * The architecture's import rules (docs/security.md, EMULATOR-2), checked on the source: the
 * emulator imports no labgate code, so it stays an independent oracle; each part reaches only what
 * it may.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = new URL('../../', import.meta.url).pathname;

function sources(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => relative(root, join(entry.parentPath, entry.name)));
}

function imports(file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8');
  return [
    ...text.matchAll(
      /(?:^|\n)\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g,
    ),
  ].map((m) => (m[1] ?? m[2])!);
}

function resolved(file: string, specifier: string): string {
  return specifier.startsWith('.') ? relative(root, join(root, file, '..', specifier)) : specifier;
}

describe('import rules', () => {
  it('finds the emulator sources (the rule below is not vacuous)', () => {
    expect(sources('src/emulator').length).toBeGreaterThan(5);
  });

  it('the emulator imports only itself and node built-ins', () => {
    const offenders = sources('src/emulator').flatMap((file) =>
      imports(file)
        .filter((spec) => !spec.startsWith('node:'))
        .map((spec) => [file, resolved(file, spec)] as const)
        .filter(([, target]) => !target.startsWith('src/emulator/')),
    );
    expect(offenders).toEqual([]);
  });
});
