/** The example's Next.js configuration. */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NextConfig } from 'next';

// The repository's root: the example imports the shared pages (examples/pages.ts) and labgate's sources.
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

const config: NextConfig = {
  poweredByHeader: false,
  turbopack: { root },
  outputFileTracingRoot: root,
  // Store drivers load at run time, from node_modules (only the one in use must be installed).
  serverExternalPackages: ['better-sqlite3', 'pg', 'ioredis'],
};

export default config;
