/**
 * The architecture's import rules (README "Layout"; docs/security.md, EMULATOR-2), checked on the source:
 * - src/core imports only src/core, `oauth4webapi` and `jose`: no `node:*`, no adapter, no store;
 * - src/adapters/<x>.ts imports src/core, src/adapters/node.ts, `node:*` and its own framework;
 * - src/stores/* import the store interface (src/core/store.ts), each other's shared code, `node:*`
 *   and their own driver; only `stores/index.ts` reaches the driver stores, and only lazily;
 * - src/emulator imports no labgate code, so it stays an independent oracle;
 * - src/gateway builds on src/core and src/adapters/node.ts;
 * - src/cli may import anything, but lazily (`import()`), so the command starts without them.
 * Type-only imports count: they end up in the published `.d.ts` files.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import {
  codeSubpaths,
  FRAMEWORKS_AND_DRIVERS,
  packageJson,
  packageName,
  packagesOf,
  root,
} from './package.js';

/** One import of a source file. */
interface Import {
  specifier: string;
  /** `static`: loaded with the module; `type`: erased from the JavaScript; `dynamic`: `import()`. */
  kind: 'static' | 'type' | 'dynamic';
}

/** Every import and re-export of a TypeScript source text, comments and strings left alone. */
function importsOf(text: string, fileName = 'file.ts'): Import[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const found: Import[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      const clause = node.importClause;
      const bindings = clause?.namedBindings;
      const typeOnly =
        clause !== undefined &&
        (clause.isTypeOnly ||
          (clause.name === undefined &&
            bindings !== undefined &&
            ts.isNamedImports(bindings) &&
            bindings.elements.length > 0 &&
            bindings.elements.every((e) => e.isTypeOnly)));
      found.push({ specifier: node.moduleSpecifier.text, kind: typeOnly ? 'type' : 'static' });
    } else if (
      ts.isExportDeclaration(node) &&
      node.moduleSpecifier &&
      ts.isStringLiteral(node.moduleSpecifier)
    ) {
      found.push({ specifier: node.moduleSpecifier.text, kind: node.isTypeOnly ? 'type' : 'static' });
    } else if (
      ts.isImportEqualsDeclaration(node) &&
      ts.isExternalModuleReference(node.moduleReference) &&
      ts.isStringLiteral(node.moduleReference.expression)
    ) {
      found.push({
        specifier: node.moduleReference.expression.text,
        kind: node.isTypeOnly ? 'type' : 'static',
      });
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments[0] !== undefined
    ) {
      const argument = node.arguments[0];
      // A computed specifier cannot be checked: it is reported as such, and so refused.
      found.push({
        specifier: ts.isStringLiteralLike(argument) ? argument.text : '<computed>',
        kind: 'dynamic',
      });
    } else if (
      ts.isImportTypeNode(node) &&
      ts.isLiteralTypeNode(node.argument) &&
      ts.isStringLiteral(node.argument.literal)
    ) {
      found.push({ specifier: node.argument.literal.text, kind: 'type' });
    } else if (
      ts.isCallExpression(node) &&
      ts.isIdentifier(node.expression) &&
      node.expression.text === 'require' &&
      node.arguments[0] !== undefined &&
      ts.isStringLiteralLike(node.arguments[0])
    ) {
      found.push({ specifier: node.arguments[0].text, kind: 'static' });
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** The `.ts` files below a folder of the repository, as repository paths. */
function sources(dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => relative(root, join(entry.parentPath, entry.name)))
    .sort();
}

/** A relative specifier as the repository path of the source it names (`./x.js` → `src/…/x.ts`). */
function target(file: string, specifier: string): string {
  return relative(root, join(root, file, '..', specifier)).replace(/\.js$/, '.ts');
}

/** What an area of src/ may import, given the importing file. */
interface Rule {
  /** Repository paths (exact, or a folder ending in `/`) a file may import. */
  files: (file: string, kind: Import['kind']) => string[];
  /** Packages a file may import (`node:*` built-ins are asked as `node:`). */
  packages: (file: string, kind: Import['kind']) => readonly string[];
}

/** The subpath a source file is published as (`src/adapters/express.ts` → `./express`), or null. */
function subpathOf(file: string): string | null {
  const built = `./dist/${file.slice('src/'.length).replace(/\.ts$/, '.js')}`;
  return codeSubpaths().find((entry) => entry.target === built)?.subpath ?? null;
}

/** The framework or driver packages of a file published as a subpath; none for a file that is not one. */
function ownPackages(file: string): readonly string[] {
  const subpath = subpathOf(file);
  return subpath === null ? [] : packagesOf(subpath);
}

const RULES: Record<string, Rule> = {
  core: { files: () => ['src/core/'], packages: () => ['oauth4webapi', 'jose'] },
  adapters: {
    files: () => ['src/core/', 'src/adapters/node.ts'],
    packages: (file) => ['node:', ...ownPackages(file)],
  },
  stores: {
    files: (file, kind) => [
      'src/core/store.ts',
      // Shared code of the stores (sql.ts): any store module that is no subpath of its own.
      ...sources('src/stores').filter((f) => subpathOf(f) === null),
      // The opener reaches every store, but only when asked for one: no driver loads with it.
      ...(basename(file) === 'index.ts' && kind === 'dynamic' ? ['src/stores/'] : []),
    ],
    packages: (file) => ['node:', ...ownPackages(file)],
  },
  emulator: { files: () => ['src/emulator/'], packages: () => ['node:'] },
  // The gateway signs its identity assertions with the core's JWT library.
  gateway: {
    files: () => ['src/gateway/', 'src/core/', 'src/adapters/node.ts'],
    packages: () => ['node:', 'jose'],
  },
  cli: {
    files: (_file, kind) => (kind === 'static' ? ['src/cli/'] : ['src/']),
    packages: (_file, kind) => (kind === 'static' ? ['node:'] : ['node:', ...allPackages()]),
  },
};

/** Every package labgate's users may have: its dependencies and peer dependencies. */
function allPackages(): string[] {
  const pkg = packageJson();
  return [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.peerDependencies ?? {})];
}

/** The imports of a file (at repository path `file`, with this text) that its area's rule refuses. */
function violations(file: string, text: string): string[] {
  const area = file.split('/')[1]!;
  const rule = RULES[area];
  if (!rule) return [`${file}: src/${area} has no import rule (test/package/imports.test.ts)`];
  return importsOf(text, file).flatMap(({ specifier, kind }) => {
    if (specifier.startsWith('.')) {
      const to = target(file, specifier);
      const allowed = rule.files(file, kind).some((f) => (f.endsWith('/') ? to.startsWith(f) : to === f));
      return allowed ? [] : [`${file}: ${kind} import of ${to}`];
    }
    const allowed = rule.packages(file, kind);
    const name = specifier.startsWith('node:') ? 'node:' : packageName(specifier);
    return allowed.includes(name) ? [] : [`${file}: ${kind} import of ${specifier}`];
  });
}

const read = (file: string) => readFileSync(join(root, file), 'utf8');
const areas = readdirSync(join(root, 'src'), { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name)
  .sort();

describe('reading imports', () => {
  it('sees every form of import, and none in comments or strings', () => {
    const text = [
      "import a from 'static-default';",
      "import { b, type C } from 'static-mixed';",
      "import type { D } from 'type-only';",
      "import { type E } from 'type-named';",
      "import 'side-effect';",
      "export { f } from 'reexport';",
      "export type { G } from 'type-reexport';",
      "export * from 'star';",
      "import h = require('import-equals');",
      "const i = await import('dynamic');",
      "let j: import('import-type').J;",
      "// import k from 'in-a-comment';",
      'const l = "import m from \'in-a-string\'";',
      '/** await import(`in-a-doc`) */',
    ].join('\n');
    expect(importsOf(text)).toEqual([
      { specifier: 'static-default', kind: 'static' },
      { specifier: 'static-mixed', kind: 'static' },
      { specifier: 'type-only', kind: 'type' },
      { specifier: 'type-named', kind: 'type' },
      { specifier: 'side-effect', kind: 'static' },
      { specifier: 'reexport', kind: 'static' },
      { specifier: 'type-reexport', kind: 'type' },
      { specifier: 'star', kind: 'static' },
      { specifier: 'import-equals', kind: 'static' },
      { specifier: 'dynamic', kind: 'dynamic' },
      { specifier: 'import-type', kind: 'type' },
    ]);
  });
});

describe('import rules', () => {
  it('has a rule for every folder of src', () => {
    expect(areas).toEqual(expect.arrayContaining(['adapters', 'cli', 'core', 'emulator', 'stores']));
    expect(areas.filter((area) => !RULES[area])).toEqual([]);
  });

  // Each rule is first shown to bite: a planted import it must refuse, in a file of that area.
  const planted: [string, string, string][] = [
    ['core', 'src/core/x.ts', "import { readFile } from 'node:fs';"],
    ['core', 'src/core/x.ts', "import type { Request } from 'express';"],
    ['core', 'src/core/x.ts', "import { labgate } from '../adapters/express.js';"],
    ['core', 'src/core/x.ts', "import { openStore } from '../stores/index.js';"],
    ['adapters', 'src/adapters/express.ts', "import type { FastifyInstance } from 'fastify';"],
    ['adapters', 'src/adapters/express.ts', "import { MemoryStore } from '../stores/index.js';"],
    ['adapters', 'src/adapters/node.ts', "import express from 'express';"],
    ['adapters', 'src/adapters/node.ts', "import { labgate } from './express.js';"],
    ['stores', 'src/stores/postgres.ts', "import { Redis } from 'ioredis';"],
    ['stores', 'src/stores/postgres.ts', "import { createLabgate } from '../core/labgate.js';"],
    ['stores', 'src/stores/postgres.ts', "import { createRedisStore } from './redis.js';"],
    ['stores', 'src/stores/index.ts', "import { createPostgresStore } from './postgres.js';"],
    ['stores', 'src/stores/sql.ts', "const pg = await import('pg');"],
    ['emulator', 'src/emulator/x.ts', "import { createLabgate } from '../core/index.js';"],
    ['emulator', 'src/emulator/x.ts', "import * as jose from 'jose';"],
    ['gateway', 'src/gateway/x.ts', "import { labgate } from '../adapters/express.js';"],
    ['gateway', 'src/gateway/x.ts', "import express from 'express';"],
    ['cli', 'src/cli/index.ts', "import { startEmulator } from '../emulator/index.js';"],
    ['cli', 'src/cli/index.ts', "const x = await import('left-pad');"],
  ];
  it.each(planted)('%s refuses %s: %s', (_area, file, text) => {
    expect(violations(file, text)).toHaveLength(1);
  });

  const keepsToRule = (area: string) => {
    const files = sources(`src/${area}`);
    expect(files.length, `no sources in src/${area}`).toBeGreaterThan(0);
    expect(files.flatMap((file) => violations(file, read(file)))).toEqual([]);
  };

  it('every adapter is a subpath of exports (which names the framework it may import)', () => {
    const adapters = sources('src/adapters');
    expect(adapters).toEqual(expect.arrayContaining(['src/adapters/express.ts', 'src/adapters/node.ts']));
    expect(adapters.filter((file) => subpathOf(file) === null)).toEqual([]);
  });

  it('the emulator imports only itself and node built-ins', () => keepsToRule('emulator'));

  it.each(areas.filter((area) => area !== 'emulator'))('src/%s keeps to its rule', keepsToRule);

  // The rules above pass on the real sources for the right reason: the imports they allow are there.
  it('sees what the real sources do import', () => {
    const seen = (file: string) => importsOf(read(file), file).map((i) => `${i.kind} ${i.specifier}`);
    expect(sources('src/core').flatMap(seen)).toEqual(
      expect.arrayContaining(['static oauth4webapi', 'static jose', 'static ./store.js']),
    );
    expect(seen('src/adapters/express.ts')).toEqual(
      expect.arrayContaining(['static ../core/index.js', 'static ./node.js', 'static node:http']),
    );
    expect(seen('src/stores/postgres.ts')).toEqual(expect.arrayContaining(['type pg', 'dynamic pg']));
    expect(seen('src/stores/index.ts')).toEqual(expect.arrayContaining(['dynamic ./postgres.js']));
    expect(seen('src/cli/index.ts')).toEqual(expect.arrayContaining(['dynamic ../emulator/index.js']));
    expect(sources('src/emulator').length).toBeGreaterThan(5);
  });
});

describe('the packages src imports are declared', () => {
  const imported = new Map<string, string[]>();
  for (const area of areas) {
    for (const file of sources(`src/${area}`)) {
      for (const { specifier } of importsOf(read(file), file)) {
        if (specifier.startsWith('.') || specifier.startsWith('node:')) continue;
        const name = packageName(specifier);
        imported.set(name, [...(imported.get(name) ?? []), file]);
      }
    }
  }

  it('finds the packages (the checks below are not vacuous)', () => {
    expect([...imported.keys()]).toEqual(expect.arrayContaining(['oauth4webapi', 'jose', 'pg', 'ioredis']));
  });

  it('every imported package is a dependency or a peer dependency', () => {
    const declared = new Set(allPackages());
    expect([...imported].filter(([name]) => !declared.has(name))).toEqual([]);
  });

  it('what the core imports is a dependency (every app loads the core)', () => {
    const dependencies = Object.keys(packageJson().dependencies ?? {});
    const core = [...imported].filter(([, files]) => files.some((f) => f.startsWith('src/core/')));
    expect(core.map(([name]) => name).filter((name) => !dependencies.includes(name))).toEqual([]);
  });

  it('every framework and driver is an optional peer dependency: installing labgate adds none', () => {
    const pkg = packageJson();
    const used = [...imported.keys()].filter((name) => FRAMEWORKS_AND_DRIVERS.includes(name));
    expect(used.length).toBeGreaterThan(0);
    const required = used.filter(
      (name) =>
        !(name in (pkg.peerDependencies ?? {}) && pkg.peerDependenciesMeta?.[name]?.optional === true),
    );
    expect(required).toEqual([]);
    expect(used.filter((name) => name in (pkg.dependencies ?? {}))).toEqual([]);
  });
});
