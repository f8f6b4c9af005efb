/**
 * The package as a user gets it: its subpaths (read from package.json's `exports`, so a new subpath is
 * picked up without editing a test), the framework or driver each one may load, the tarball `npm pack`
 * makes (once per test run, shared by every test file that needs it), and child processes with bounds.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inCi } from '../support/services.js';

/** The repository root. */
export const root: string = fileURLToPath(new URL('../../', import.meta.url));

/** The fields of package.json these tests read. */
export interface PackageJson {
  name: string;
  version: string;
  files: string[];
  exports: Record<string, string | { types?: string; default?: string }>;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

/** package.json as it is now. */
export function packageJson(): PackageJson {
  return JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as PackageJson;
}

/** A subpath of `exports` that is code (a JavaScript module), with where it points in the build. */
export interface CodeSubpath {
  /** The key of `exports`: `.`, `./express`, `./stores/postgres`… */
  subpath: string;
  /** What a user imports: `labgate`, `labgate/express`… */
  specifier: string;
  /** The built module, relative to the package root: `./dist/adapters/express.js`. */
  target: string;
}

/** Every subpath of `exports` that is a JavaScript module (JSON files and package.json left out). */
export function codeSubpaths(pkg: PackageJson = packageJson()): CodeSubpath[] {
  return Object.entries(pkg.exports).flatMap(([subpath, value]) => {
    const target = typeof value === 'string' ? value : value.default;
    if (!target?.endsWith('.js')) return [];
    return [{ subpath, specifier: subpath === '.' ? pkg.name : `${pkg.name}${subpath.slice(1)}`, target }];
  });
}

/** The subpaths that plug labgate into a web framework or server: the modules built from src/adapters. */
export function hostSubpaths(pkg: PackageJson = packageJson()): CodeSubpath[] {
  return codeSubpaths(pkg).filter((entry) => entry.target.startsWith('./dist/adapters/'));
}

/**
 * The packages each subpath is about: its framework (an adapter) or its driver (a store). A subpath may
 * load these and no other framework or driver; a host's packaging test installs exactly these next to
 * labgate. A new subpath needs an entry here (an empty list when it needs no framework).
 */
export const SUBPATH_PACKAGES: Readonly<Record<string, readonly string[]>> = {
  '.': [],
  './node': [],
  './express': ['express'],
  './fastify': ['fastify', 'fastify-plugin'],
  './hono': ['hono', '@hono/node-server'],
  './next': ['next', 'react', 'react-dom'],
  './stores': [],
  './stores/sqlite': ['better-sqlite3'],
  './stores/postgres': ['pg'],
  './stores/redis': ['ioredis'],
  './emulator': [],
};

/** Every framework and driver package: no subpath loads one that is not its own. */
export const FRAMEWORKS_AND_DRIVERS: readonly string[] = [...new Set(Object.values(SUBPATH_PACKAGES).flat())];

/** The framework or driver packages of a subpath; throws, naming the fix, for a subpath with no entry. */
export function packagesOf(subpath: string): readonly string[] {
  const packages = SUBPATH_PACKAGES[subpath];
  if (!packages) {
    throw new Error(
      `package.json exports "${subpath}", which has no entry in SUBPATH_PACKAGES (test/package/package.ts): ` +
        'add the framework or driver packages it may load ([] for none)',
    );
  }
  return packages;
}

/** The package a bare specifier names: `pg` for `pg`, `next` for `next/server`, `@hono/node-server` for itself. */
export function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

// ---------------------------------------------------------------------------------------------
// Child processes

/** What a finished child process left. */
export interface RunResult {
  /** The exit code, or null when a signal (the time bound) ended it. */
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command without a shell; never rejects: a failure is in `code` and `stderr`. With
 * `stdoutFile`, the command writes its standard output to that file instead of a pipe (read back
 * into `stdout`): a program that calls `process.exit` right after a large write to a pipe loses the
 * part the pipe had not taken yet, a file takes it whole.
 */
export function run(
  command: string,
  args: readonly string[],
  options: { cwd: string; timeoutMs: number; env?: NodeJS.ProcessEnv; stdoutFile?: string },
): Promise<RunResult> {
  const out = options.stdoutFile === undefined ? 'pipe' : openSync(options.stdoutFile, 'w', 0o600);
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', out, 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    const finish = (code: number | null, failure = '') => {
      clearTimeout(timer);
      if (typeof out === 'number') {
        closeSync(out);
        stdout = readFileSync(options.stdoutFile!, 'utf8');
      }
      const bound = killed ? `\n[killed after ${options.timeoutMs} ms]` : '';
      resolve({ code, stdout, stderr: `${stderr}${failure}${bound}` });
    };
    child.on('error', (error) => finish(null, `\n${error.message}`));
    child.on('close', (code) => finish(code));
  });
}

/**
 * The environment for an npm that works on another project: this one's, without what `npm test`
 * adds about this repository (its package.json fields, the running script, its folder). npm's
 * configuration (`npm_config_*`: registry, cache, proxy) stays, so the install reaches the same
 * registry the user's npm does.
 */
export function npmEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(process.env).filter(
      ([name]) =>
        !/^npm_(package_|lifecycle_|command$|config_local_prefix$)/i.test(name) && name !== 'INIT_CWD',
    ),
  ) as NodeJS.ProcessEnv;
}

/** One line for a failed command: what ran and what it said. */
export function describeRun(what: string, result: RunResult): string {
  return `${what} exited with ${result.code ?? 'a signal'}:\n${result.stderr.slice(-4000)}\n${result.stdout.slice(-4000)}`;
}

// ---------------------------------------------------------------------------------------------
// The tarball, packed once per test run

/** Files to pack, from package.json's `files`: their paths, sizes and modification times. */
function packedFilesDigest(pkg: PackageJson): string {
  const hash = createHash('sha256').update(readFileSync(join(root, 'package.json')));
  const visit = (path: string) => {
    const stat = statSync(path, { throwIfNoEntry: false });
    if (!stat) return;
    if (stat.isDirectory()) {
      for (const name of readdirSync(path).sort()) visit(join(path, name));
      return;
    }
    hash.update(`${relative(root, path)}\0${stat.size}\0${stat.mtimeMs}\n`);
  };
  for (const entry of pkg.files) visit(join(root, entry));
  return hash.digest('hex').slice(0, 24);
}

const PACK_PREFIX = 'labgate-pack-';
const PACK_BOUND_MS = 120_000;

/**
 * The path of the tarball `npm pack` makes of the package as it is on disk. Packed once per content:
 * the folder is named after a digest of package.json and every packed file's size and mtime, the
 * first caller creates it (an atomic `mkdir`), and the test files running alongside wait for its
 * result. `npm test` builds first, so every run packs afresh; a stale folder of an earlier build is
 * removed after a day.
 *
 * `npm pack` runs with `--ignore-scripts`: the package's `prepare` script is the build, and building
 * while other test files read dist/ would pull it from under them. The build is `npm test`'s job.
 */
export async function packedTarball(): Promise<string> {
  const pkg = packageJson();
  if (statSync(join(root, 'dist'), { throwIfNoEntry: false }) === undefined) {
    throw new Error('dist/ is missing: run `npm run build` first (`npm test` does)');
  }
  const dir = join(tmpdir(), `${PACK_PREFIX}${packedFilesDigest(pkg)}`);
  const done = join(dir, 'tarball.json');
  const failed = join(dir, 'failed.txt');
  const deadline = Date.now() + PACK_BOUND_MS;
  for (;;) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const stat = statSync(dir);
      if (typeof process.getuid === 'function' && stat.uid !== process.getuid()) {
        throw new Error(`${dir} belongs to another user: remove it`);
      }
      const result = readIfThere(done);
      if (result !== null) return join(dir, (JSON.parse(result) as { filename: string }).filename);
      const failure = readIfThere(failed);
      if (failure !== null) throw new Error(`npm pack failed (once for this run):\n${failure}`);
      // A folder with neither file whose packer died: take it over.
      if (Date.now() - stat.mtimeMs > PACK_BOUND_MS) rmSync(dir, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`no tarball in ${dir} after ${PACK_BOUND_MS} ms`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      continue;
    }
    pruneOldPacks(dir);
    const packing = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], {
      cwd: root,
      timeoutMs: PACK_BOUND_MS,
      env: npmEnv(),
    });
    if (packing.code !== 0) {
      writeFileSync(failed, describeRun('npm pack', packing));
      throw new Error(describeRun('npm pack', packing));
    }
    const [info] = JSON.parse(packing.stdout) as [{ filename: string }];
    // Written under another name and renamed, so that a waiting reader never sees half a file.
    writeFileSync(`${done}.part`, JSON.stringify({ filename: info.filename }));
    renameSync(`${done}.part`, done);
    return join(dir, info.filename);
  }
}

function readIfThere(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

function pruneOldPacks(keep: string): void {
  const dayAgo = Date.now() - 24 * 60 * 60 * 1000;
  for (const name of readdirSync(tmpdir())) {
    const path = join(tmpdir(), name);
    if (!name.startsWith(PACK_PREFIX) || path === keep) continue;
    const stat = statSync(path, { throwIfNoEntry: false });
    if (stat && stat.mtimeMs < dayAgo && stat.uid === process.getuid?.()) {
      rmSync(path, { recursive: true, force: true });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Skipping (outside CI only)

/**
 * Why the tests that `npm install` into fresh projects are skipped, or null when they run. Only
 * outside CI, and only when asked (`LABGATE_SKIP_PACK=1`): never by default, never in CI.
 */
export const skipInstalls: string | null =
  !inCi && process.env['LABGATE_SKIP_PACK'] === '1'
    ? 'LABGATE_SKIP_PACK=1 (unset it, or set CI=true, to run them)'
    : null;
