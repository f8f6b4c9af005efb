/**
 * The behaviour every host shares (test/adapters/suite.ts), on labgate/next: a Next.js app of route
 * handlers written into a temporary folder, built with `next build` and served in this process by
 * Next's custom-server API, with the suite's labgate (and store) handed to it.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import nextModule from 'next';
import { vi } from 'vitest';
import { wrapRequestHandler } from '../../../src/adapters/next.js';
import { hostBehaviour, labgateFor } from '../suite.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const next = nextModule as unknown as typeof nextModule.default;
/** Where the app's modules find the suite's labgate. */
const KEY = 'labgate.test.next';

/** The app: route handlers on labgate/next (resolved to the sources), each a page of the suite. */
const FILES: Record<string, string> = {
  'next.config.mjs': `export default { turbopack: { root: '/' }, outputFileTracingRoot: '/', typescript: { ignoreBuildErrors: true } };\n`,
  'tsconfig.json': JSON.stringify({
    compilerOptions: {
      target: 'ES2023',
      lib: ['ES2023', 'DOM'],
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      strict: true,
      skipLibCheck: true,
      allowJs: true,
      esModuleInterop: true,
      isolatedModules: true,
      jsx: 'react-jsx',
      noEmit: true,
      paths: {
        labgate: [join(ROOT, 'src/core/index.ts')],
        'labgate/next': [join(ROOT, 'src/adapters/next.ts')],
      },
    },
    include: ['**/*.ts'],
  }),
  'lib/auth.ts': `import type { Labgate } from 'labgate';\nexport const auth = (): Labgate => (globalThis as any)[Symbol.for('${KEY}')];\n`,
  'app/auth/[...labgate]/route.ts': `import { handlers } from 'labgate/next';\nimport { auth } from '../../../lib/auth.js';\nexport const { GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS } = handlers(auth);\n`,
  'app/public/route.ts': `import { getSession } from 'labgate/next';
import { auth } from '../../lib/auth.js';
export async function GET(request: Request) {
  try {
    return new Response(\`public \${(await getSession(auth))?.user.username ?? 'anonymous'}\`);
  } catch (error) {
    return auth().errorResponse(error, request);
  }
}
`,
  'app/me/route.ts': `import { requireUser } from 'labgate/next';
import { auth } from '../../lib/auth.js';
export const GET = requireUser(auth, (_request, { session }) => Response.json({ username: session.user.username }));
`,
  'app/admin/route.ts': `import { requireUser } from 'labgate/next';
import { auth } from '../../lib/auth.js';
export const GET = requireUser(auth, (_request, { session }) => new Response(\`admin \${session.user.username}\`), { role: 'admin' });
`,
  'app/maintain/route.ts': `import { requireUser } from 'labgate/next';
import { auth } from '../../lib/auth.js';
export const GET = requireUser(auth, () => new Response('maintain'), { access: 'project:acme/app>=maintainer' });
`,
  'app/token/route.ts': `import { requireUser } from 'labgate/next';
import { auth } from '../../lib/auth.js';
export const GET = requireUser(auth, async (_request, { session, labgate }) =>
  Response.json({ length: (await labgate.getAccessToken(session)).length }));
`,
};

/** Writes the app into a new temporary folder and builds it; returns the folder. */
async function buildApp(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'labgate-next-'));
  for (const [path, text] of Object.entries(FILES)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  await promisify(execFile)(process.execPath, [join(ROOT, 'node_modules/next/dist/bin/next'), 'build', dir], {
    cwd: dir,
    env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1', NODE_ENV: 'production' },
    timeout: 240_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  return dir;
}

// The suite starts the host in its beforeAll: here that includes a `next build`.
vi.setConfig({ hookTimeout: 300_000 });

hostBehaviour({
  name: 'next',
  async start(config) {
    const dir = await buildApp();
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const origin = `http://127.0.0.1:${port}`;
    const auth = labgateFor(config, origin);
    (globalThis as Record<symbol, unknown>)[Symbol.for(KEY)] = auth;
    const app = next({ dev: false, dir, hostname: '127.0.0.1', port });
    await app.prepare();
    const handle = wrapRequestHandler(auth, app.getRequestHandler());
    server.on('request', (req, res) => void handle(req, res));
    return {
      origin,
      async close() {
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await app.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
});
