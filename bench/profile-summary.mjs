#!/usr/bin/env node
/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): self time by function and by file, so the
 * hot spots of a server under load can be read without DevTools.
 *
 *   node bench/profile-summary.mjs bench/profiles/labgate.cpuprofile [--top 25] [--focus REGEXP]
 *                                  [--requests N]
 *
 * With `--requests` (how many requests the server answered while profiled), times are also given in
 * µs per request, which compares across servers.
 *
 * `--focus` (a regular expression on file paths; default: labgate's built core/ and adapters/) also
 * lists the time of the code in those files with what it calls, less what it hands back to Express
 * (router/, express/): what labgate itself costs.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    top: { type: 'string', default: '25' },
    focus: { type: 'string', default: '(^|/)(dist|candidate/[^/]+)/(core|adapters)/' },
    requests: { type: 'string' },
  },
});
if (positionals.length !== 1) {
  process.stderr.write('usage: node bench/profile-summary.mjs FILE.cpuprofile [--top N]\n');
  process.exit(2);
}
const top = Number(values.top);
const profile = JSON.parse(readFileSync(positionals[0], 'utf8'));
const root = fileURLToPath(new URL('..', import.meta.url));

// Self time per node: samples × their time deltas.
const selfUs = new Map();
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i];
  selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
}
const shortUrl = (url) => {
  if (!url) return '';
  if (url.startsWith('file://')) {
    const file = fileURLToPath(url);
    const path = relative(root, file);
    return path.startsWith('..') ? file : path.replace(/^node_modules\//, '');
  }
  return url;
};
const byFunction = new Map();
const byFile = new Map();
let total = 0;
for (const node of profile.nodes) {
  const us = selfUs.get(node.id) ?? 0;
  if (us === 0) continue;
  total += us;
  const { functionName, url, lineNumber } = node.callFrame;
  const file = shortUrl(url) || `(${functionName || 'native'})`;
  const key = `${functionName || '(anonymous)'}  ${file}${url ? `:${lineNumber + 1}` : ''}`;
  byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  byFile.set(file, (byFile.get(file) ?? 0) + us);
}
const busy = total - (byFile.get('((idle))') ?? 0);
byFunction.delete(`(idle)  ((idle))`);
byFile.delete('((idle))');
const requests = values.requests ? Number(values.requests) : 0;
const table = (title, map) => {
  const rows = [...map].sort((a, b) => b[1] - a[1]).slice(0, top);
  const perRequest = requests ? `, ${(busy / requests).toFixed(1)} µs per request` : '';
  process.stdout.write(`\n${title} (% of non-idle ${(busy / 1000).toFixed(0)} ms${perRequest})\n`);
  for (const [key, us] of rows) {
    const each = requests ? `${(us / requests).toFixed(2).padStart(7)} µs/req  ` : '';
    process.stdout.write(
      `${((100 * us) / busy).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${each}${key}\n`,
    );
  }
};
table('Self time by function', byFunction);
table('Self time by file', byFile);

// Inclusive time of the focused files' entry points: their own subtree, less what they hand back to
// the app (a middleware calling Express's next() runs the rest of the request inside its own frame).
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const focus = new RegExp(values.focus);
const fileOf = (n) => shortUrl(n.callFrame.url);
const focused = (n) => focus.test(fileOf(n));
const handOff = (n) => /^(router|express)\//.test(fileOf(n));
const own = (node) => {
  let us = selfUs.get(node.id) ?? 0;
  for (const id of node.children ?? []) {
    const child = nodes.get(id);
    if (!handOff(child)) us += own(child);
  }
  return us;
};
const inclusive = new Map();
const childIds = new Set(profile.nodes.flatMap((n) => n.children ?? []));
const walk = (node) => {
  if (focused(node)) {
    const { functionName, lineNumber } = node.callFrame;
    const key = `${functionName || '(anonymous)'}  ${fileOf(node)}:${lineNumber + 1}`;
    inclusive.set(key, (inclusive.get(key) ?? 0) + own(node));
    return;
  }
  for (const id of node.children ?? []) walk(nodes.get(id));
};
for (const n of profile.nodes) if (!childIds.has(n.id)) walk(n);
const focusTotal = [...inclusive.values()].reduce((a, b) => a + b, 0);
table(
  `Time in labgate's code (files matching ${values.focus}) and what it calls, less what it hands back to Express (${((100 * focusTotal) / busy).toFixed(1)}% in all)`,
  inclusive,
);
