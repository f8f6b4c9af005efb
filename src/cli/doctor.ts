/**
 * `labgate doctor`: reads the configuration the app, the gateway and the demo read (the environment,
 * and a `.env` file that never overrides it), runs the checks of ./checks.ts against it and against
 * GitLab, and prints ✓, ⚠ or ✗ for each, with the fix and the docs section (docs/doctor.md). With
 * `--signin` it also signs in for real (./signin-probe.ts). Exit status: 1 on any ✗, 2 on a bad
 * command line, 0 otherwise. Everything beyond `node:*` and src/cli loads lazily.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs, parseEnv } from 'node:util';
import { argumentError } from './args.js';
import { type CheckResult, type CheckStatus, SYMBOLS } from './report.js';

/** The text of `labgate doctor --help`. */
export const DOCTOR_HELP = `labgate doctor: check a labgate configuration against GitLab, without a user. Prints ✓, ⚠ or ✗ for
each check, with the fix and a link to its section of docs/doctor.md.

Usage:
  labgate doctor [options]

Options:
  --gateway              Check the gateway's configuration: the redirect URI is LABGATE_URL/oauth2/callback
                         (instead of /auth/callback), the default LABGATE_URL http://localhost:4180 and the
                         default store sqlite:./.labgate/gateway.db
  -f, --env-file PATH    Read this file for variables the environment does not set (default: ./.env
                         when present); the environment always wins. Node 20 itself also reads a
                         --env-file argument and stops when the file is missing: -f avoids that
  --signin               Also sign in at GitLab for real: checks the registered redirect URI, the
                         application's scopes and the groups and projects LABGATE_ALLOW names
                         (prints a link to open in a browser)
  --signin-user LOGIN    With --signin: sign in as this user by filling GitLab's own forms instead of a
                         browser (test instances); the password comes from LABGATE_DOCTOR_PASSWORD
  --timeout DURATION     How long each connection or request may take (default 10s)
  --json                 Print JSON: { "checks": [CheckResult…], "summary": {…} }
  -h, --help             This text

Reads: GITLAB_URL, GITLAB_CLIENT_ID, GITLAB_CLIENT_SECRET, GITLAB_SCOPES, LABGATE_URL, LABGATE_SECRET,
  LABGATE_STORE, LABGATE_ALLOW, LABGATE_REQUIRE (and PORT, LABGATE_RECHECK as the app does); for the
  connection to GitLab, NODE_EXTRA_CA_CERTS, HTTPS_PROXY, HTTP_PROXY, NO_PROXY from the environment.

Checks: configuration, gitlab-reachable (DNS, TCP), gitlab-tls, proxy, discovery (the issuer equals
  GITLAB_URL), oidc, pkce, scopes, client-credentials (a token request with a made-up code: GitLab
  tells a wrong client id or secret apart from a good one), device-flow (for information), clock,
  secret, cookies, store.

Exit status: 0 no ✗ (warnings allowed), 1 at least one ✗, 2 a bad flag or value.

Examples:
  labgate doctor
  labgate doctor --gateway -f /etc/labgate/gateway.env
  labgate doctor --json | jq '.checks[] | select(.status == "fail")'
`;

/** What {@link runDoctor} writes to; `isTTY` decides colours (stdout) and the progress line (stderr). */
export interface DoctorStream {
  write(text: string): unknown;
  isTTY?: boolean | undefined;
}

/** Everything `labgate doctor` takes from its process, so that tests can give their own. */
export interface DoctorIo {
  args: string[];
  /** The process environment. */
  env: Readonly<Record<string, string | undefined>>;
  /** Where `.env` is looked for and relative paths resolve. */
  cwd: string;
  stdout: DoctorStream;
  stderr: DoctorStream;
}

const FLAGS = {
  gateway: { type: 'boolean' },
  'env-file': { type: 'string', short: 'f' },
  signin: { type: 'boolean' },
  'signin-user': { type: 'string' },
  timeout: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function parseFlags(args: string[]) {
  return parseArgs({ args, options: FLAGS, strict: true, allowPositionals: false }).values;
}

/** `10s`, `500ms`, `1m` or a number of seconds, as milliseconds; null when it is none of these. */
function parseTimeout(text: string): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(text);
  if (!match) return null;
  const amount = Number(match[1]);
  const ms = match[2] === 'ms' ? amount : match[2] === 'm' ? amount * 60_000 : amount * 1000;
  return ms >= 1 && ms <= 600_000 ? Math.round(ms) : null;
}

/** The `.env` file's variables (null: no file, and none was asked for), or why it cannot be read. */
async function readEnvFile(
  path: string,
  required: boolean,
): Promise<{ values: Record<string, string> | null } | { error: string }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    if (!required && code === 'ENOENT') return { values: null };
    return { error: `cannot read the env file ${JSON.stringify(path)} (${code})` };
  }
  const values: Record<string, string> = {};
  for (const [key, value] of Object.entries(parseEnv(text))) if (value !== undefined) values[key] = value;
  return { values };
}

const COLOUR: Record<CheckStatus, string> = { ok: '32', warn: '33', fail: '31', skip: '2' };

/** Whether to colour: a terminal, and NO_COLOR unset or empty (no-color.org). */
function wantsColour(stream: DoctorStream, env: DoctorIo['env']): boolean {
  return stream.isTTY === true && !env['NO_COLOR'];
}

/** One result as it reads on a terminal: the symbol and title, then indented details, fix and docs. */
export function formatResult(result: CheckResult, colour: boolean): string {
  const paint = (code: string, text: string) => (colour ? `\x1b[${code}m${text}\x1b[0m` : text);
  const lines = [`${paint(COLOUR[result.status], SYMBOLS[result.status])} ${result.title}`];
  for (const line of result.detail?.split('\n') ?? []) lines.push(`    ${paint('2', line)}`);
  if (result.status === 'warn' || result.status === 'fail') {
    const [first = '', ...rest] = result.fix?.split('\n') ?? [];
    if (first) lines.push(`    ${paint('1', 'fix:')} ${first}`, ...rest.map((line) => `         ${line}`));
    if (result.docs) lines.push(`    ${paint('2', `docs: ${result.docs}`)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** How many results have each status. */
export function summarise(results: readonly CheckResult[]): Record<CheckStatus, number> {
  const counts: Record<CheckStatus, number> = { ok: 0, warn: 0, fail: 0, skip: 0 };
  for (const result of results) counts[result.status]++;
  return counts;
}

/** A progress line on stderr, rewritten in place; only on a terminal. */
function progress(stream: DoctorStream): { show(label: string): void; clear(): void; stop(): void } {
  if (stream.isTTY !== true) return { show() {}, clear() {}, stop() {} };
  const frames = '⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏';
  let frame = 0;
  let label = '';
  const draw = () => {
    if (label) stream.write(`\r\x1b[2K${frames[frame++ % frames.length]} ${label}…`);
  };
  const timer = setInterval(draw, 80);
  timer.unref();
  return {
    show(next) {
      label = next;
      draw();
    },
    clear() {
      if (label) stream.write('\r\x1b[2K');
      label = '';
    },
    stop() {
      clearInterval(timer);
      this.clear();
    },
  };
}

/**
 * `labgate doctor` with its process given: arguments, environment, folder and output streams.
 * Returns the exit status (0 no ✗, 1 a ✗, 2 a bad command line).
 *
 * @example
 * ```ts
 * let out = '';
 * const code = await runDoctor({ args: ['--json'], env: { GITLAB_URL: gitlab.url, … }, cwd: dir,
 *   stdout: { write: (t) => (out += t) }, stderr: { write: () => true } });
 * ```
 */
export async function runDoctor(io: DoctorIo): Promise<number> {
  const fail = (text: string) => {
    io.stderr.write(`labgate doctor: ${text}\n`);
    return 2;
  };
  let values: ReturnType<typeof parseFlags>;
  try {
    values = parseFlags(io.args);
  } catch (error) {
    return fail(`${argumentError(error)} (labgate doctor --help lists the flags)`);
  }
  if (values.help) {
    io.stdout.write(DOCTOR_HELP);
    return 0;
  }
  let timeoutMs = 10_000;
  if (values.timeout !== undefined) {
    const parsed = parseTimeout(values.timeout);
    if (parsed === null)
      return fail(
        `--timeout ${JSON.stringify(values.timeout)} is not a duration like 10s or 500ms (at most 10m)`,
      );
    timeoutMs = parsed;
  }
  if (values['signin-user'] !== undefined && !values.signin) return fail('--signin-user needs --signin');
  if (values['signin-user'] !== undefined && values['signin-user'].trim() === '')
    return fail('--signin-user needs a user name');

  const envPath = resolve(io.cwd, values['env-file'] ?? '.env');
  const file = await readEnvFile(envPath, values['env-file'] !== undefined);
  if ('error' in file) return fail(file.error);
  // The environment wins over the file: a variable set in both keeps the environment's value.
  const env: Record<string, string | undefined> = { ...file.values };
  for (const [key, value] of Object.entries(io.env)) if (value !== undefined) env[key] = value;

  let user: { login: string; password: string } | undefined;
  if (values['signin-user'] !== undefined) {
    const password = env['LABGATE_DOCTOR_PASSWORD'];
    if (!password) return fail('--signin-user needs the password in LABGATE_DOCTOR_PASSWORD');
    user = { login: values['signin-user'].trim(), password };
  }

  const { createDoctorContext, DOCTOR_CHECKS } = await import('./checks.js');
  const ctx = createDoctorContext({
    env,
    processEnv: io.env,
    envFile: file.values ? envPath : null,
    gateway: values.gateway === true,
    timeoutMs,
    cwd: io.cwd,
  });
  const json = values.json === true;
  const colour = !json && wantsColour(io.stdout, io.env);
  const line = progress(io.stderr);
  const results: CheckResult[] = [];
  const emit = (result: CheckResult) => {
    results.push(result);
    if (json) return;
    line.clear();
    io.stdout.write(formatResult(result, colour));
  };
  try {
    if (!json) {
      const what = ctx.gateway ? 'the gateway' : 'the app';
      io.stdout.write(
        `labgate doctor: ${what}'s configuration against GitLab${ctx.gitlabUrl ? ` at ${ctx.gitlabUrl.href.replace(/\/+$/, '')}` : ''}\n\n`,
      );
    }
    for (const check of DOCTOR_CHECKS) {
      line.show(check.label);
      let result: CheckResult;
      try {
        result = await check.run(ctx);
      } catch (error) {
        // A check that throws is a bug in it, not in the configuration: say so and carry on.
        const { logText } = await import('../core/log.js');
        result = {
          id: check.id,
          title: `The check could not run: ${logText(error instanceof Error ? error.message : error)}`,
          status: 'fail',
          docs: `docs/doctor.md#${check.id}`,
        };
      }
      emit(result);
    }
    if (values.signin) {
      line.show('signing in at GitLab');
      const resolved = ctx.resolved;
      if (!resolved || ctx.reachable === false) {
        emit({
          id: 'signin-user',
          title: `Sign-in not tried: ${resolved ? 'GitLab cannot be reached' : 'the configuration is refused'}`,
          status: 'skip',
          docs: 'docs/doctor.md#signin-user',
        });
      } else {
        line.clear();
        const { signInProbe } = await import('./signin-probe.js');
        const probed = await signInProbe({
          gitlabUrl: resolved.gitlabUrl.href.replace(/\/+$/, ''),
          clientId: resolved.clientId,
          clientSecret: resolved.clientSecret,
          redirectUri: resolved.redirectUri,
          scopes: resolved.scopes,
          allow: (env['LABGATE_ALLOW'] ?? '')
            .split(',')
            .map((rule) => rule.trim())
            .filter(Boolean),
          user,
          print: (text) => io.stderr.write(`${text}\n`),
        });
        for (const result of probed) emit(result);
      }
    }
  } finally {
    line.stop();
  }

  const counts = summarise(results);
  const exitCode = counts.fail > 0 ? 1 : 0;
  if (json) {
    io.stdout.write(`${JSON.stringify({ checks: results, summary: { ...counts, exitCode } }, null, 2)}\n`);
  } else {
    const paint = (status: CheckStatus, text: string) =>
      colour && counts[status] > 0 ? `\x1b[${COLOUR[status]}m${text}\x1b[0m` : text;
    const parts = [
      paint('ok', `${counts.ok} ✓`),
      paint('warn', `${counts.warn} ⚠`),
      paint('fail', `${counts.fail} ✗`),
      ...(counts.skip > 0 ? [paint('skip', `${counts.skip} – not run`)] : []),
    ];
    io.stdout.write(`\n${parts.join('  ')}${exitCode ? '  (fix each ✗ above)' : ''}\n`);
  }
  return exitCode;
}

/**
 * `labgate doctor [options]`: returns the exit status (0 no ✗, 1 a ✗, 2 a bad command line). See
 * {@link DOCTOR_HELP}.
 *
 * @example
 * ```ts
 * process.exitCode = await doctorCommand(['--gateway', '--env-file', '/etc/labgate/gateway.env']);
 * ```
 */
export async function doctorCommand(args: string[]): Promise<number> {
  return runDoctor({
    args,
    env: process.env,
    cwd: process.cwd(),
    stdout: process.stdout,
    stderr: process.stderr,
  });
}
