// Copies the non-TypeScript files that ship with the package (fixtures, schemas) into dist/.
import { cpSync, mkdirSync } from 'node:fs';

const assets = ['emulator/demo-fixtures.json', 'emulator/fixtures.schema.json'];
for (const asset of assets) {
  mkdirSync(new URL(`../dist/${asset.replace(/[^/]+$/, '')}`, import.meta.url), { recursive: true });
  cpSync(new URL(`../src/${asset}`, import.meta.url), new URL(`../dist/${asset}`, import.meta.url));
}
