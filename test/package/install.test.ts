/**
 * The package as a user installs it: for each host subpath (every `exports` entry built from
 * src/adapters), a fresh project outside this repository gets the packed tarball and only that host's
 * framework from the registry, then a script there starts the emulator and the host's server on
 * loopback and signs a user in over real HTTP, ending with `GET /auth/session` → 200 and the user.
 *
 * A host needs `test/package/fixtures/hosts/<name>.mjs` (how that host mounts labgate) and its
 * packages in SUBPATH_PACKAGES (test/package/package.ts), their versions taken from package.json's
 * devDependencies. In CI these always run; elsewhere `LABGATE_SKIP_PACK=1` skips them.
 * `npm test` builds first; run `npm run build` before running this file alone.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CodeSubpath,
  describeRun,
  FRAMEWORKS_AND_DRIVERS,
  hostSubpaths,
  npmEnv,
  packageJson,
  packagesOf,
  packedTarball,
  root,
  run,
  skipInstalls,
} from './package.js';

const fixtures = join(root, 'test', 'package', 'fixtures');
const INSTALL_BOUND_MS = 240_000;

/** The host file of a subpath: `./express` → fixtures/hosts/express.mjs. */
function hostFile(subpath: string): string {
  return join(fixtures, 'hosts', `${subpath.slice(2)}.mjs`);
}

/** `name@range` for each package a host needs, the range from package.json's devDependencies. */
function installSpecs(subpath: string): string[] {
  const dev = packageJson().devDependencies ?? {};
  return packagesOf(subpath).map((name) => {
    const range = dev[name];
    if (!range) {
      throw new Error(
        `labgate${subpath.slice(1)} needs ${name}, which package.json's devDependencies lack: add it there`,
      );
    }
    return `${name}@${range}`;
  });
}

interface Project {
  dir: string;
}

/** A fresh project in the temporary folder with the tarball and the host's packages installed. */
async function install(tarball: string, subpath: string): Promise<Project> {
  const dir = mkdtempSync(join(tmpdir(), `labgate-host-${subpath.slice(2)}-`));
  // Nothing above the project may hold a node_modules: Node would find packages there that the
  // project did not install, and a missing dependency would go unnoticed.
  for (let up = dirname(dir); ; up = dirname(up)) {
    if (existsSync(join(up, 'node_modules'))) throw new Error(`${up} holds a node_modules folder`);
    if (dirname(up) === up) break;
  }
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({ name: 'labgate-host-check', private: true, type: 'module' }, null, 2),
  );
  const result = await run(
    'npm',
    ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball, ...installSpecs(subpath)],
    { cwd: dir, timeoutMs: INSTALL_BOUND_MS, env: npmEnv() },
  );
  if (result.code !== 0) throw new Error(describeRun(`npm install in ${dir}`, result));
  return { dir };
}

/** Whether a package is installed in the project. */
function installed(project: Project, name: string): boolean {
  return existsSync(join(project.dir, 'node_modules', name, 'package.json'));
}

interface SignInReport {
  issuer: string;
  callback: { status: number; location: string };
  session: { status: number; user: { user: { username: string; issuer: string; sub: string } } | null };
  home: { status: number; body: string };
}

const hosts = hostSubpaths();
const projects = new Map<string, Promise<Project>>();
let tarball: string;

describe.skipIf(skipInstalls !== null)(
  `installed from the tarball, one host at a time${skipInstalls ? ` [skipped: ${skipInstalls}]` : ''}`,
  () => {
    beforeAll(async () => {
      tarball = await packedTarball();
      // Two installs at a time: npm waits on the network and the disk more than on the processor.
      const queue = hosts.filter((h) => existsSync(hostFile(h.subpath)));
      const next = async (): Promise<void> => {
        const host = queue.shift();
        if (!host) return;
        const project = install(tarball, host.subpath);
        projects.set(host.subpath, project);
        await project.catch(() => undefined);
        return next();
      };
      void Promise.all([next(), next()]);
    }, 150_000);

    afterAll(async () => {
      for (const project of projects.values()) {
        const settled = await project.catch(() => null);
        if (settled) rmSync(settled.dir, { recursive: true, force: true });
      }
    });

    it('finds the host subpaths in exports (express and node at least)', () => {
      expect(hosts.map((h) => h.subpath)).toEqual(expect.arrayContaining(['./express', './node']));
    });

    it.each(hosts)(
      '$specifier: signs in through the emulator with only its framework installed',
      async ({ subpath, specifier }: CodeSubpath) => {
        if (!existsSync(hostFile(subpath))) {
          throw new Error(
            `${specifier} has no host file: add ${hostFile(subpath).slice(root.length)} exporting ` +
              'mount({ server, auth, origin }) (see fixtures/hosts/express.mjs)',
          );
        }
        const own = packagesOf(subpath);
        // The queue starts each install as soon as a slot frees; wait until this one has begun.
        await expect
          .poll(() => projects.has(subpath), { timeout: INSTALL_BOUND_MS, interval: 100 })
          .toBe(true);
        const project = await projects.get(subpath)!;

        // Only labgate, its dependencies and this host's framework: no other framework, no driver
        // (they are optional peers, so npm must not add them).
        for (const name of FRAMEWORKS_AND_DRIVERS)
          expect(installed(project, name), name).toBe(own.includes(name));
        const manifest = JSON.parse(
          readFileSync(join(project.dir, 'node_modules', 'labgate', 'package.json'), 'utf8'),
        ) as { scripts?: Record<string, string> };
        // A user's install runs nothing of labgate's.
        for (const script of ['preinstall', 'install', 'postinstall']) {
          expect(manifest.scripts?.[script], script).toBeUndefined();
        }

        copyFileSync(join(fixtures, 'signin.mjs'), join(project.dir, 'signin.mjs'));
        copyFileSync(hostFile(subpath), join(project.dir, 'host.mjs'));
        const result = await run(process.execPath, ['signin.mjs'], { cwd: project.dir, timeoutMs: 60_000 });
        expect(result.code, describeRun(`signin.mjs for ${specifier}`, result)).toBe(0);
        const report = JSON.parse(result.stdout.trim().split('\n').at(-1)!) as SignInReport;

        expect(report.callback.status).toBe(303);
        expect(report.session.status).toBe(200);
        expect(report.session.user?.user).toMatchObject({
          username: 'alice',
          issuer: report.issuer,
          sub: '1',
        });
        // The host's own route sees the signed-in user too.
        expect(report.home).toEqual({ status: 200, body: 'hello alice' });
      },
      INSTALL_BOUND_MS + 90_000,
    );
  },
);
