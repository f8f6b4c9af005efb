/**
 * How long `labgate emulator` takes to start: from spawning the command to its "listening at" line,
 * side by side with a bare Node HTTP server that prints the same line (the anchor: what any Node
 * server pays to start), interleaved round by round.
 *
 *   npm run build && node bench/emulator.mjs [--rounds 15]
 *
 * Prints a table (median and spread of each, ratio to the anchor); docs/emulator.md says "well
 * under a second" on the strength of it, and bench/RESULTS.md records a run.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '15' } } });
const rounds = Number(args.rounds);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 200) {
  process.stderr.write('bench: --rounds takes a whole number from 1 to 200\n');
  process.exit(2);
}
const cli = fileURLToPath(new URL('../dist/cli/index.js', import.meta.url));
if (!existsSync(cli)) {
  process.stderr.write('bench: dist/cli/index.js is missing: run `npm run build` first\n');
  process.exit(2);
}

const bareServer = `const s = require('node:http').createServer();
s.listen(0, '127.0.0.1', () => console.log('listening at http://127.0.0.1:' + s.address().port));`;

const contestants = [
  { key: 'bare', label: 'a bare `node:http` server (anchor)', args: ['-e', bareServer] },
  {
    key: 'emulator',
    label: '`labgate emulator --port 0` (demo fixtures)',
    args: [cli, 'emulator', '--port', '0'],
  },
];

/** Milliseconds from spawn to the "listening at" line; the process is stopped at once. */
function startTime(nodeArgs) {
  return new Promise((resolve, reject) => {
    const began = performance.now();
    const child = spawn(process.execPath, nodeArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let ms = null;
    const watchdog = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no "listening at" line within 30 s: ${nodeArgs.join(' ')}`));
    }, 30_000);
    const onData = (chunk) => {
      output += chunk;
      if (ms !== null || !/listening at http:\/\/127\.0\.0\.1:\d+/.test(output)) return;
      ms = performance.now() - began;
      child.kill('SIGTERM');
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(watchdog);
      if (ms !== null) resolve(ms);
      else reject(new Error(`exited (${code}) before listening: ${output.slice(0, 300)}`));
    });
  });
}

const samples = Object.fromEntries(contestants.map((c) => [c.key, []]));
for (let round = 1; round <= rounds; round++) {
  // Alternate which goes first, so neither always starts on a machine the other just warmed.
  const order = round % 2 ? contestants : [...contestants].reverse();
  for (const c of order) samples[c.key].push(await startTime(c.args));
  process.stderr.write(
    `bench: round ${round}/${rounds} ${contestants.map((c) => `${c.key} ${samples[c.key].at(-1).toFixed(0)} ms`).join(', ')}\n`,
  );
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const anchor = median(samples.bare);
const lines = [
  `Command: \`node bench/emulator.mjs --rounds ${rounds}\` (${new Date().toISOString()}; ${os.cpus().length} × ${os.cpus()[0]?.model.trim()}, Node ${process.version})`,
  '',
  '| contestant | start to "listening at", median | min–max | ratio to the anchor |',
  '|---|---:|---:|---:|',
  ...contestants.map((c) => {
    const xs = samples[c.key];
    return `| ${c.label} | ${median(xs).toFixed(0)} ms | ${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)} ms | ${(median(xs) / anchor).toFixed(1)}× |`;
  }),
];
process.stdout.write(`${lines.join('\n')}\n`);
