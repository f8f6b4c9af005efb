/**
 * README.md's TypeScript snippets compile against the real API (docs and tests rely on them; a
 * snippet that drifted from the API fails here with tsc's own messages).
 *
 * How the README's ```ts blocks are checked:
 * - Every block is a module of its own, in its own folder under test/package/.readme-check/ (git-ignored),
 *   with `export {};` appended so that even a block without imports is a module.
 * - A block holding several files (the Next.js one) names each file on a line of its own, a comment
 *   such as `// app/me/route.ts — what it is`; the block is split there, each part written under that
 *   name.
 * - A fragment (a block that goes on from an earlier one and uses an `app` or an `auth` it does not
 *   declare) says so on the line before it, with the names it uses and does not declare:
 *   `<!-- fragment: app auth handler -->`. Each name gets a declaration from {@link FRAGMENT_NAMES}
 *   prepended to the block; an unknown name fails the test.
 * - A block that truly cannot be type-checked opts out on the line before it:
 *   `<!-- not type-checked: the reason -->` (none does today).
 * - A block that imports Next.js (`next/…` or `labgate/next`) is checked as a Next app is: its own
 *   project with create-next-app's settings (`moduleResolution: "bundler"`, `jsx`, `@/*` for its root).
 *   Every other block is checked under the repository's tsconfig.json (NodeNext, strict), which maps
 *   `labgate` and `labgate/*` to src/.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { root, run } from './package.js';

const README = join(root, 'README.md');
const TSC = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const CHECK_ROOT = join(root, 'test', 'package', '.readme-check');

/**
 * What a fragment may use without declaring it, and its type: the app and the labgate of the README's
 * earlier blocks (fragments of the Express section and of "Access" use Express's `app`).
 */
const FRAGMENT_NAMES: Readonly<Record<string, string>> = {
  app: "import('express').Express",
  auth: "import('labgate').Labgate",
  options: "import('labgate').LabgateOptions",
  session: "import('labgate').Session",
  handler: "import('express').RequestHandler",
};

/**
 * Beside the repository's settings: a snippet shows how to get a value (`const me = await api.get(…)`)
 * and leaves its use to the reader, so unused names are not errors here.
 */
const SNIPPET_OPTIONS = { noEmit: true, noUnusedLocals: false, noUnusedParameters: false };

/** One ```ts block of the README. */
interface Block {
  /** The README line of the opening fence (1-based). */
  line: number;
  /** The `##`/`###` heading the block sits under. */
  heading: string;
  code: string;
  /** The `<!-- … -->` marker on the line before the opening fence, if any. */
  marker: { kind: 'fragment' | 'not type-checked'; text: string } | null;
}

/** Every ```ts block of a Markdown text. */
function tsBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  let heading = '';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const title = /^#{1,6}\s+(.*)$/.exec(line);
    if (title) heading = title[1]!;
    if (!/^```(ts|typescript|tsx)\s*$/.test(line)) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    let before = start - 1;
    while (before >= 0 && lines[before]!.trim() === '') before--;
    const marked = /^<!--\s*(fragment|not type-checked):\s*(.*?)\s*-->$/.exec(lines[before]?.trim() ?? '');
    blocks.push({
      line: start + 1,
      heading,
      code: body.join('\n'),
      marker: marked ? { kind: marked[1] as 'fragment' | 'not type-checked', text: marked[2]! } : null,
    });
  }
  return blocks;
}

/** A line that names the file the following lines belong to: `// app/me/route.ts — …`. */
const FILE_NAME_LINE = /^\/\/\s+((?:[\w@.[\]-]+\/)*[\w@.[\]-]+\.(?:ts|tsx|mts))(?:\s+—.*)?$/;

/** A block's files: one `snippet.ts`, or the files its file-name comments name. */
function filesOf(block: Block): { name: string; code: string }[] {
  const files: { name: string; code: string[] }[] = [];
  for (const line of block.code.split('\n')) {
    const named = FILE_NAME_LINE.exec(line);
    if (named) files.push({ name: named[1]!, code: [line] });
    else if (files.length === 0) files.push({ name: 'snippet.ts', code: [line] });
    else files.at(-1)!.code.push(line);
  }
  return files.map(({ name, code }) => ({ name, code: `${code.join('\n').trimEnd()}\n\nexport {};\n` }));
}

/** The declarations a fragment's marker asks for, or a message naming what it may not ask for. */
function preambleOf(block: Block): string {
  if (block.marker?.kind !== 'fragment') return '';
  const names = block.marker.text.split(/[\s,]+/).filter(Boolean);
  const unknown = names.filter((name) => !(name in FRAGMENT_NAMES));
  if (unknown.length > 0)
    throw new Error(
      `README.md:${block.line}: the fragment marker names ${unknown.join(', ')}; known: ${Object.keys(FRAGMENT_NAMES).join(', ')}`,
    );
  return names.map((name) => `declare const ${name}: ${FRAGMENT_NAMES[name]};\n`).join('');
}

/** Whether a block is (part of) a Next.js app. */
function isNext(block: Block): boolean {
  return /from\s+'(next\/[^']*|labgate\/next)'/.test(block.code);
}

/** A folder name for a block: its README line and heading. */
function folderOf(block: Block): string {
  const slug = block.heading
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
  return `line-${String(block.line).padStart(4, '0')}-${slug || 'top'}`;
}

/** The repository's `paths`, rebased onto a project folder, plus create-next-app's `@/*`. */
function nextPaths(project: string): Record<string, string[]> {
  const base = JSON.parse(readFileSync(join(root, 'tsconfig.json'), 'utf8')) as {
    compilerOptions: { paths: Record<string, string[]> };
  };
  const rebased = Object.fromEntries(
    Object.entries(base.compilerOptions.paths).map(([name, targets]) => [
      name,
      targets.map((target) => relative(project, join(root, target))),
    ]),
  );
  return { ...rebased, '@/*': ['./*'] };
}

/** tsc on one project: its messages (files named relative to the project), and every file it read. */
async function typeCheck(project: string): Promise<{ errors: string; files: string[] }> {
  const result = await run(
    process.execPath,
    [TSC, '--noEmit', '--pretty', 'false', '--listFiles', '-p', project],
    { cwd: project, timeoutMs: 60_000 },
  );
  const lines = `${result.stdout}${result.stderr}`.split('\n');
  const files = lines.filter((line) => line.startsWith('/'));
  if (result.code === 0) return { errors: '', files };
  const said = lines.filter((line) => line !== '' && !line.startsWith('/')).join('\n');
  return { errors: `${relative(root, project)} (tsc exited with ${result.code}):\n${said}`, files };
}

const blocks = tsBlocks(readFileSync(README, 'utf8'));
let checkDir: string | undefined;
let failed = false;

afterAll(() => {
  // Kept after a failure, so that the files tsc named can be opened.
  if (checkDir && !failed) rmSync(checkDir, { recursive: true, force: true });
});

describe('README.md', () => {
  it('has TypeScript blocks, and every marker is one the check knows', () => {
    expect(blocks.length).toBeGreaterThan(5);
    for (const block of blocks) preambleOf(block);
    // Opting out says why, so that the reason can be looked at again.
    const unexplained = blocks.filter(
      (block) => block.marker?.kind === 'not type-checked' && !block.marker.text,
    );
    expect(unexplained.map((block) => `README.md:${block.line}`)).toEqual([]);
  });

  it('splits a block at its file-name comments', () => {
    const files = filesOf({
      line: 1,
      heading: 'x',
      marker: null,
      code: "// lib/a.ts — the first\nexport const a = 1;\n\n// app/[...x]/route.ts\nimport { a } from '@/lib/a';",
    });
    expect(files.map((file) => file.name)).toEqual(['lib/a.ts', 'app/[...x]/route.ts']);
    expect(files[1]!.code).toContain("import { a } from '@/lib/a';");
  });

  it('every ```ts block compiles against the real API', async () => {
    mkdirSync(CHECK_ROOT, { recursive: true });
    checkDir = mkdtempSync(join(CHECK_ROOT, 'run-'));
    const dir = checkDir;
    const plain: string[] = [];
    const written: string[] = [];
    const nextProjects: string[] = [];
    for (const block of blocks) {
      if (block.marker?.kind === 'not type-checked') continue;
      const folder = join(dir, folderOf(block));
      const preamble = preambleOf(block);
      for (const file of filesOf(block)) {
        const path = join(folder, file.name);
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, `${preamble}${file.code}`);
        written.push(path);
      }
      if (!isNext(block)) {
        plain.push(`${relative(dir, folder)}/**/*`);
        continue;
      }
      // As create-next-app sets it up, beside the repository's strictness.
      writeFileSync(
        join(folder, 'tsconfig.json'),
        JSON.stringify(
          {
            extends: relative(folder, join(root, 'tsconfig.json')),
            compilerOptions: {
              module: 'esnext',
              moduleResolution: 'bundler',
              jsx: 'react-jsx',
              types: ['node', 'react', 'react-dom'],
              rootDir: relative(folder, root),
              ...SNIPPET_OPTIONS,
              paths: nextPaths(folder),
            },
            include: ['**/*.ts', '**/*.tsx'],
            exclude: [],
          },
          null,
          2,
        ),
      );
      nextProjects.push(folder);
    }
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify(
        {
          extends: relative(dir, join(root, 'tsconfig.json')),
          compilerOptions: { rootDir: relative(dir, root), ...SNIPPET_OPTIONS },
          include: plain,
          exclude: [],
        },
        null,
        2,
      ),
    );
    const reports = await Promise.all([dir, ...nextProjects].map(typeCheck));
    const errors = reports
      .map((report) => report.errors)
      .filter(Boolean)
      .join('\n');
    failed = errors !== '';
    // A snippet that no project included would pass unchecked.
    const checked = new Set(reports.flatMap((report) => report.files));
    expect(written.filter((path) => !checked.has(path)).map((path) => relative(dir, path))).toEqual([]);
    expect(
      errors,
      `README.md's snippets do not compile (the files are in ${relative(root, dir)}):\n${errors}`,
    ).toBe('');
  }, 60_000);
});
