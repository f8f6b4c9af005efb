/**
 * `labgate --help` and `labgate <command> --help` for every command, and what a mistyped command line
 * gets: the built command in its own process, exit code 2 and one line on stderr naming the mistake,
 * never a stack trace or the whole help text.
 * `npm test` builds first; run `npm run build` before running this file alone.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CLI = fileURLToPath(new URL('../../dist/cli/index.js', import.meta.url));
const COMMANDS = ['emulator', 'demo', 'gateway', 'init', 'doctor', 'secret'] as const;

let cwd: string;
beforeAll(() => {
  if (!existsSync(CLI)) throw new Error('dist/cli/index.js is missing: run `npm run build` first');
  // An empty folder, so no .env of the checkout is read or refused.
  cwd = mkdtempSync(join(tmpdir(), 'labgate-help-'));
});
afterAll(() => rmSync(cwd, { recursive: true, force: true }));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the command with no labgate settings in its environment; stdin is closed (not a terminal). */
function labgate(args: string[]): Promise<Result> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
  for (const name of Object.keys(env)) if (/^(GITLAB_|LABGATE_|OAUTH2_PROXY_)/.test(name)) delete env[name];
  const child = spawn(process.execPath, [CLI, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** The example commands of a help text: the lines under `Examples:` that run labgate. */
function examples(help: string): string[] {
  const section = help.split(/^Examples:$/m)[1] ?? '';
  return section.split('\n').filter((line) => /^\s+(npx |export .*\$\()?labgate\b|\$\(labgate /.test(line));
}

describe('labgate --help', () => {
  it('lists every command, how to get its help, and examples', async () => {
    const { code, stdout, stderr } = await labgate(['--help']);
    expect(code).toBe(0);
    expect(stderr).toBe('');
    for (const command of COMMANDS) expect(stdout).toMatch(new RegExp(`^ {2}labgate ${command}\\b`, 'm'));
    expect(stdout).toContain('labgate <command> --help');
    expect(examples(stdout).length).toBeGreaterThanOrEqual(3);
    expect((await labgate(['-h'])).stdout).toBe(stdout);
    expect((await labgate(['help'])).stdout).toBe(stdout);
  });

  it('prints the version', async () => {
    const { code, stdout } = await labgate(['--version']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^\d+\.\d+\.\d+\S*\n$/);
  });

  it('refuses an unknown command in one line', async () => {
    const { code, stdout, stderr } = await labgate(['emulate']);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toBe('labgate: unknown command "emulate" (labgate --help lists the commands)\n');
  });
});

describe.each(COMMANDS)('labgate %s', (command) => {
  it('--help shows its usage with examples and exits 0', async () => {
    const { code, stdout, stderr } = await labgate([command, '--help']);
    expect(code).toBe(0);
    expect(stderr).toBe('');
    expect(stdout.startsWith(`labgate ${command}:`)).toBe(true);
    expect(stdout).toMatch(/^Usage:$/m);
    expect(stdout).toMatch(/^Examples:$/m);
    // At least one example runs this very command.
    expect(examples(stdout).filter((line) => line.includes(`labgate ${command}`)).length).toBeGreaterThan(0);
    expect((await labgate([command, '-h'])).stdout).toBe(stdout);
  });

  it('refuses an unknown flag: exit 2, one line on stderr naming it', async () => {
    const { code, stdout, stderr } = await labgate([command, '--no-such-flag']);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr.endsWith('\n')).toBe(true);
    expect(stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(stderr).toContain('--no-such-flag');
    expect(stderr.startsWith(`labgate ${command}: `)).toBe(true);
  });
});

describe('bad values', () => {
  it.each([
    ['emulator', ['--port', 'eighty'], 'labgate emulator: --port "eighty" is not a port number (0 to 65535)'],
    ['emulator', ['--port', '70000'], 'labgate emulator: --port "70000" is not a port number (0 to 65535)'],
    [
      'emulator',
      ['--port'],
      'labgate emulator: --port needs a value (labgate emulator --help lists the flags)',
    ],
    ['demo', ['--pkce', 'sometimes'], 'labgate demo: --pkce must be one of public, dynamic'],
    [
      'emulator',
      ['stray'],
      'labgate emulator: unexpected argument stray (labgate emulator --help lists the flags)',
    ],
    ['secret', ['32'], 'labgate secret: takes no arguments (labgate secret --help)'],
    [
      'init',
      ['--yes', '--url', 'ftp://x'],
      'labgate init: --url "ftp://x" must start with https:// (or http:// on this machine)',
    ],
    [
      'doctor',
      ['--timeout', 'soon'],
      'labgate doctor: --timeout "soon" is not a duration like 10s or 500ms (at most 10m)',
    ],
  ])('labgate %s %j: exit 2 and one clear line', async (command, args, line) => {
    const { code, stdout, stderr } = await labgate([command, ...args]);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toBe(`${line}\n`);
  });

  it('labgate gateway names a bad value and exits 2 without starting', async () => {
    const { code, stderr } = await labgate(['gateway', '--upstream', 'http://127.0.0.1:1', '--listen', 'x']);
    expect(code).toBe(2);
    expect(stderr).toContain('--listen "x" is not HOST:PORT');
    expect(stderr).not.toMatch(/\n\s+at /);
  });
});
