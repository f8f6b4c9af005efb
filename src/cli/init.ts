/**
 * `labgate init`: sets up GitLab sign-in for an app (the library) or for `labgate gateway`. It asks for
 * (or takes as flags) the GitLab URL, the public URL and the access policy; prints the page where the
 * OAuth application is registered on that GitLab (user, group or instance-wide), the redirect URI, the
 * scopes the policy needs and nothing more, and the confidential setting; or, on a self-managed GitLab
 * with an administrator's token, creates the instance-wide application through the Applications API.
 * Then it writes the env file (mode 0600, a new `LABGATE_SECRET`, never over an existing file unless
 * asked) and runs `labgate doctor` on it. Everything beyond `node:*` loads lazily.
 */
import { randomBytes } from 'node:crypto';
import { constants, type FileHandle, lstat, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { argumentError } from './args.js';

/** The text of `labgate init --help`. */
export const INIT_HELP = `labgate init: set up GitLab sign-in for an app or for labgate gateway. Asks for (or takes as flags) the
GitLab URL, the public URL and who may sign in; prints the page where the OAuth application is registered
in GitLab and exactly what to enter there; writes the env file (mode 0600) with a new LABGATE_SECRET; then
runs labgate doctor on it.

Usage:
  labgate init [options]           Ask on the terminal; flags given are not asked again
  labgate init --yes [options]     Ask nothing, everything from flags (scripts)

Options:
  --gitlab-url URL         GitLab's address, with its sub-path if any (GITLAB_URL; default https://gitlab.com)
  --url URL                The public origin of the app or gateway (LABGATE_URL; default
                           http://localhost:3000, with --gateway http://localhost:4180)
  --allow RULES            Who may sign in, comma-separated, any one suffices (LABGATE_ALLOW; default: anyone
                           with an account on that GitLab)
  --require LIST           What every user must be, comma-separated (LABGATE_REQUIRE; default active)
  --gateway                For labgate gateway (redirect URI LABGATE_URL/oauth2/callback) instead of an app
                           using the library (LABGATE_URL/auth/callback)
  --group PATH             Register the application in a group (group Settings > Applications; Owner role)
  --instance               Register an instance-wide application (Admin area > Applications; administrators)
  --admin-token TOKEN      Create the instance-wide application through GitLab's Applications API with an
                           administrator's personal access token (scope api; self-managed GitLab only); also
                           read from LABGATE_ADMIN_TOKEN; never written anywhere
  --name NAME              The application's name in GitLab (default "labgate (HOST)")
  --client-id ID           The application's ID, as GitLab shows it
  --client-secret SECRET   The application's secret (typed at the prompt it stays out of the shell history)
  -f, --env-file PATH      The file to write (default ./.env). Prefer -f for a file that does not exist
                           yet: Node 20 reads a --env-file argument itself, even one meant for the
                           command, and stops with "not found" before labgate starts
  --force                  Replace that file if it exists (otherwise init asks, or with --yes refuses)
  -y, --yes                Ask nothing: a missing --client-id or --client-secret is an error
  --no-check               Do not run labgate doctor after writing
  -h, --help               This text

Rules (LABGATE_ALLOW): group:PATH[>=LEVEL], group-exact:PATH[>=LEVEL], project:PATH[>=LEVEL], email:@DOMAIN,
  user:NAME; LEVEL is guest, reporter, developer, maintainer or owner.
Requirements (LABGATE_REQUIRE): active, 2fa, confirmed-email, human, internal, or none.
Scopes: openid profile email, plus read_api when a rule reads memberships GitLab's groups claim cannot
  answer (a level, a project, an id), or read_user for the 2fa, human and internal requirements.

Exit status: 0 written (and the checks passed), 1 nothing written (the file exists, GitLab refused, the
  input ended) or a check failed, 2 a bad flag or value, 130 interrupted.

Examples:
  # Answer the questions
  npx labgate init

  # A script: an app on gitlab.com for developers of acme/platform
  labgate init --yes --url https://app.example.com --allow 'group:acme/platform>=developer' \\
    --client-id "$GITLAB_APP_ID" --client-secret "$GITLAB_APP_SECRET"

  # The gateway, registered as a group application on a self-managed GitLab
  labgate init --gateway --gitlab-url https://gitlab.example.com --group acme --url https://wiki.example.com

  # Self-managed: let init create the instance-wide application with an administrator's token
  LABGATE_ADMIN_TOKEN=glpat-… labgate init --yes --gitlab-url https://gitlab.example.com \\
    --url https://app.example.com --allow group:acme
`;

const FLAGS = {
  'gitlab-url': { type: 'string' },
  url: { type: 'string' },
  allow: { type: 'string' },
  require: { type: 'string' },
  gateway: { type: 'boolean' },
  group: { type: 'string' },
  instance: { type: 'boolean' },
  'admin-token': { type: 'string' },
  name: { type: 'string' },
  'client-id': { type: 'string' },
  'client-secret': { type: 'string' },
  'env-file': { type: 'string', short: 'f' },
  force: { type: 'boolean' },
  yes: { type: 'boolean', short: 'y' },
  'no-check': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const DEFAULT_GITLAB = 'https://gitlab.com';
const BASE_SCOPES = ['openid', 'profile', 'email'];
/** GitLab group and subgroup paths: letters, digits, `_`, `.`, `-`, not starting with `-`. */
const GROUP_PATH = /^[A-Za-z0-9_.][A-Za-z0-9_.-]*(\/[A-Za-z0-9_.][A-Za-z0-9_.-]*)*$/;

/** Where the application is registered. */
type Owner = { kind: 'user' } | { kind: 'group'; path: string } | { kind: 'instance' };

/** A failure that ends the command with this exit code after one line on stderr. */
class Stop extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

const usage = (message: string) => new Stop(2, message);

/** Colour only on a terminal, and never when NO_COLOR is set. */
function painter(): (style: 'bold' | 'green' | 'yellow' | 'red', text: string) => string {
  const on = process.stdout.isTTY === true && !process.env['NO_COLOR'];
  const codes = { bold: 1, green: 32, yellow: 33, red: 31 } as const;
  return (style, text) => (on ? `\x1b[${codes[style]}m${text}\x1b[0m` : text);
}

const out = (line = '') => process.stdout.write(`${line}\n`);

/** A value shown in a message: quoted, with control characters escaped. */
const quote = (value: string) => JSON.stringify(value);

function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

/**
 * The GitLab base URL without a trailing slash (a sub-path stays). `http://` only for loopback hosts,
 * as the library and the gateway accept it (README "Configuration").
 */
function gitlabUrlOf(raw: string, name: string): { url: string; warning?: string } {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw usage(`${name} ${quote(raw)} is not a URL (such as https://gitlab.example.com)`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw usage(`${name} ${quote(raw)} must start with https://`);
  if (url.username || url.password || url.search || url.hash)
    throw usage(`${name} ${quote(raw)} must be GitLab's address only (no credentials, query or fragment)`);
  const base = `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
  if (url.protocol === 'http:') {
    if (!isLoopback(url.hostname))
      throw usage(`${name} ${quote(raw)} uses http://; use https:// (plain http only for loopback hosts)`);
    return { url: base, warning: `${name} uses http://, accepted because the host is loopback` };
  }
  return { url: base };
}

/** The public origin, without a trailing slash; a path is refused, since the callback is at its root. */
function publicUrlOf(raw: string, name: string): { url: string; warning?: string } {
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw usage(`${name} ${quote(raw)} is not a URL (such as https://app.example.com)`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw usage(`${name} ${quote(raw)} must start with https:// (or http:// on this machine)`);
  if (url.username || url.password || url.search || url.hash || (url.pathname !== '/' && url.pathname !== ''))
    throw usage(`${name} ${quote(raw)} must be an origin without a path (such as https://app.example.com)`);
  if (url.protocol === 'http:' && !isLoopback(url.hostname)) {
    return {
      url: url.origin,
      warning: `${name} uses http:// on a host that is not loopback: the session cookie and GitLab's code travel unencrypted; use https://`,
    };
  }
  return { url: url.origin };
}

/** The GitLab page where applications of this owner are listed and added. */
function registrationPage(gitlab: string, owner: Owner): { url: string; how: string } {
  if (owner.kind === 'group') {
    return {
      url: `${gitlab}/groups/${owner.path}/-/settings/applications`,
      how: `group ${owner.path}: Settings > Applications > Add new application (needs the Owner role)`,
    };
  }
  if (owner.kind === 'instance') {
    return {
      url: `${gitlab}/admin/applications`,
      how: 'instance-wide: Admin area > Applications > Add new application (administrators only)',
    };
  }
  return {
    url: `${gitlab}/-/user_settings/applications`,
    how: 'your user: Edit profile > Applications > Add new application',
  };
}

/** Why each scope is asked for, as printed. */
const SCOPE_REASONS: Record<string, string> = {
  openid: 'sign-in with OpenID Connect (the ID token)',
  profile: 'the name, username and avatar',
  email: 'the email address',
  read_api: 'the group and project memberships the access rules read',
  read_user: 'the account facts the requirements read (2fa, human, internal)',
};

/**
 * The least scopes for the policy: `openid profile email`, plus what core `scopesForPolicy` says the
 * rules need. `read_user` only for the requirements that cannot be decided without it (`2fa`, `human`,
 * `internal`): for `active` alone an answer from `/oauth/userinfo` is enough (docs/access.md).
 */
async function scopesFor(allow: string | undefined, require: string | undefined): Promise<string[]> {
  const { parsePolicy, scopesForPolicy } = await import('../core/access.js');
  let needed: string[];
  let requirements: readonly string[];
  try {
    const policy = parsePolicy({
      ...(allow !== undefined ? { allow } : {}),
      ...(require !== undefined ? { require } : {}),
    });
    needed = scopesForPolicy(policy);
    requirements = policy.require ?? [];
  } catch (error) {
    if (error instanceof TypeError) throw usage(error.message.replace(/^labgate: /, ''));
    throw error;
  }
  const scopes = [...BASE_SCOPES];
  if (needed.includes('read_api')) scopes.push('read_api');
  else if (requirements.some((r) => r === '2fa' || r === 'human' || r === 'internal'))
    scopes.push('read_user');
  return scopes;
}

/**
 * One env-file line, quoted so that Node's `--env-file`, dotenv, Docker Compose and a POSIX shell
 * (`set -a; . ./.env`) all read back the same value: single quotes take everything literally; double
 * quotes only for a value with a `'` and nothing any of them would expand.
 */
function envLine(name: string, value: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
  if (/[\0-\x1f\x7f]/.test(value)) throw new Stop(1, `${name} contains a control character: not written`);
  if (!value.includes("'")) return `${name}='${value}'`;
  if (!/["\\$`]/.test(value)) return `${name}="${value}"`;
  throw new Stop(1, `${name} holds both kinds of quote: it cannot be written to an env file safely`);
}

/** Writes `text` to `file` with mode 0600 whatever the umask; `replace` swaps it in atomically. */
async function writePrivateFile(file: string, text: string, replace: boolean): Promise<void> {
  const target = replace
    ? join(dirname(file), `.${basename(file)}.${randomBytes(6).toString('hex')}.tmp`)
    : file;
  let handle: FileHandle;
  try {
    // O_EXCL: never follow a link or reuse a file someone else created in the meantime.
    handle = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new Stop(1, `${file} exists: not overwritten (pass --force to replace it)`);
    if (code === 'ENOENT') throw new Stop(1, `cannot write ${file}: its folder does not exist`);
    throw new Stop(1, `cannot write ${file} (${code ?? 'error'})`);
  }
  try {
    // The mode given to open() is cut by the umask; chmod is not.
    await handle.chmod(0o600);
    await handle.writeFile(text, 'utf8');
    await handle.sync();
  } catch (error) {
    await handle.close();
    await unlink(target).catch(() => {});
    throw new Stop(1, `cannot write ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  await handle.close();
  if (replace) {
    try {
      await rename(target, file);
    } catch (error) {
      await unlink(target).catch(() => {});
      throw new Stop(1, `cannot replace ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
}

/** Whether anything is at that path, a dangling link included. */
async function exists(file: string): Promise<boolean> {
  return lstat(file).then(
    () => true,
    () => false,
  );
}

/** Questions on the terminal, one readline for the whole session; secrets are read without echo. */
interface Prompter {
  ask(question: string, fallback?: string): Promise<string>;
  askSecret(question: string): Promise<string>;
  close(): void;
}

function createPrompter(): Prompter {
  let muted = false;
  // Readline echoes what is typed through its output; muting that stream hides a secret while typed.
  const output = new Writable({
    write(chunk: Buffer, _encoding, done) {
      if (!muted) process.stdout.write(chunk);
      done();
    },
  });
  const rl: Interface = createInterface({ input: process.stdin, output, terminal: true, historySize: 0 });
  let pending: ((error: Stop) => void) | undefined;
  let closed = false;
  rl.on('SIGINT', () => {
    if (pending) pending(new Stop(130, 'interrupted: nothing written'));
    else {
      // Raw mode turns Ctrl+C into this event; with no question open it still means stop.
      rl.close();
      process.kill(process.pid, 'SIGINT');
    }
  });
  rl.on('close', () => pending?.(new Stop(1, 'the input ended: nothing written')));
  const question = (text: string) =>
    new Promise<string>((resolve, reject) => {
      pending = (error) => {
        pending = undefined;
        if (muted) process.stdout.write('\n');
        muted = false;
        reject(error);
      };
      rl.question(text, (answer) => {
        pending = undefined;
        resolve(answer);
      });
    });
  return {
    async ask(text, fallback) {
      const answer = (await question(`${text}${fallback ? ` [${fallback}]` : ''}: `)).trim();
      return answer === '' && fallback !== undefined ? fallback : answer;
    },
    async askSecret(text) {
      process.stdout.write(`${text}: `);
      muted = true;
      try {
        return (await question('')).trim();
      } finally {
        if (muted) process.stdout.write('\n');
        muted = false;
      }
    },
    close() {
      if (closed) return;
      closed = true;
      pending = undefined;
      rl.close();
    },
  };
}

/** Asks until `check` accepts the answer; the error of a rejected one is printed and asked again. */
async function askValid<T>(
  ask: () => Promise<string>,
  check: (answer: string) => T | Promise<T>,
): Promise<T> {
  for (;;) {
    const answer = await ask();
    try {
      return await check(answer);
    } catch (error) {
      if (!(error instanceof Stop) || error.code !== 2) throw error;
      process.stderr.write(`  ${error.message}\n`);
    }
  }
}

interface Created {
  id: number | null;
  clientId: string;
  clientSecret: string;
  callbackUrl: string;
  confidential: boolean;
}

/**
 * `POST /api/v4/applications` (admin only, instance-wide): GitLab returns the secret this once. The
 * token goes in `Authorization: Bearer`, which GitLab takes for personal access tokens as for OAuth ones.
 */
async function createApplication(options: {
  gitlab: string;
  token: string;
  name: string;
  redirectUri: string;
  scopes: string[];
}): Promise<Created> {
  const { logText } = await import('../core/log.js');
  const endpoint = `${options.gitlab}/api/v4/applications`;
  let response: Response;
  try {
    response = await fetch(endpoint, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${options.token}`,
        'content-type': 'application/json',
        accept: 'application/json',
      },
      body: JSON.stringify({
        name: options.name,
        redirect_uri: options.redirectUri,
        scopes: options.scopes.join(' '),
        confidential: true,
      }),
      redirect: 'manual',
      signal: AbortSignal.timeout(20_000),
    });
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).name;
    throw new Stop(1, `cannot reach GitLab at ${endpoint} (${logText(cause)}): no application created`);
  }
  const text = await response.text().catch(() => '');
  let body: Record<string, unknown> = {};
  let said = text ? `: ${logText(text, 300)}` : '';
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
      body = parsed as Record<string, unknown>;
      said = `: ${logText(JSON.stringify(body['message'] ?? body['error'] ?? body), 300)}`;
    }
  } catch {
    // Not JSON: GitLab's text, escaped and cut, says enough.
  }
  if (response.status === 401)
    throw new Stop(1, `GitLab refused the admin token (401): unknown, expired or revoked${said}`);
  if (response.status === 403) {
    throw new Stop(
      1,
      `GitLab refused the admin token (403): it must belong to an administrator and carry the api scope ` +
        `(and admin_mode where Admin Mode is on)${said}`,
    );
  }
  if (response.status === 404)
    throw new Stop(
      1,
      `GitLab has no Applications API at ${endpoint} (404): register the application by hand`,
    );
  if (response.status !== 200 && response.status !== 201)
    throw new Stop(1, `GitLab did not create the application (${response.status})${said}`);
  const { id, application_id: clientId, secret, callback_url: callbackUrl, confidential } = body;
  if (typeof clientId !== 'string' || clientId === '' || typeof secret !== 'string' || secret === '')
    throw new Stop(1, 'GitLab answered without application_id and secret: check the Admin area');
  return {
    id: typeof id === 'number' && Number.isSafeInteger(id) ? id : null,
    clientId,
    clientSecret: secret,
    callbackUrl: typeof callbackUrl === 'string' ? callbackUrl : '',
    confidential: confidential !== false,
  };
}

/**
 * `labgate init [options]`: returns the exit code (0 written and checked, 1 not written or a check
 * failed, 2 bad usage, 130 interrupted). See {@link INIT_HELP}.
 *
 * @example
 * ```ts
 * process.exitCode = await initCommand(['--yes', '--url', 'https://app.example.com', '--client-id', id,
 *   '--client-secret', secret]);
 * ```
 */
export async function initCommand(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args, options: FLAGS, strict: true, allowPositionals: false }));
  } catch (error) {
    process.stderr.write(`labgate init: ${argumentError(error)} (labgate init --help lists the flags)\n`);
    return 2;
  }
  if (values['help']) {
    process.stdout.write(INIT_HELP);
    return 0;
  }
  const interactive = values['yes'] !== true;
  if (interactive && !process.stdin.isTTY) {
    process.stderr.write(
      'labgate init: standard input is not a terminal; pass --yes with the values as flags (labgate init --help)\n',
    );
    return 2;
  }
  const prompt = interactive ? createPrompter() : undefined;
  try {
    return await run(values, prompt);
  } catch (error) {
    if (!(error instanceof Stop)) throw error;
    process.stderr.write(`labgate init: ${error.message}\n`);
    return error.code;
  } finally {
    prompt?.close();
  }
}

async function run(values: Record<string, string | boolean | undefined>, prompt: Prompter | undefined) {
  const paint = painter();
  const warn = (text: string) => out(`${paint('yellow', '⚠')} ${text}`);
  const flag = (name: string) => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  const gateway = values['gateway'] === true;
  const envFile = resolve(flag('env-file') ?? '.env');
  if (flag('env-file') === '') throw usage('--env-file needs a path');

  // Conflicts first, so nothing is asked in vain.
  const adminFlag = flag('admin-token');
  const envToken = process.env['LABGATE_ADMIN_TOKEN'] || undefined;
  if (adminFlag !== undefined && adminFlag.trim() === '') throw usage('--admin-token is empty');
  if (flag('group') !== undefined && (values['instance'] || adminFlag !== undefined))
    throw usage('--group registers a group application: it cannot go with --instance or --admin-token');
  if (
    (adminFlag !== undefined || (envToken && flag('group') === undefined)) &&
    (flag('client-id') || flag('client-secret'))
  )
    throw usage(
      `${adminFlag !== undefined ? '--admin-token' : 'LABGATE_ADMIN_TOKEN'} creates the application and its ` +
        'credentials: drop --client-id and --client-secret',
    );
  if (flag('group') !== undefined && !GROUP_PATH.test(flag('group')!))
    throw usage(`--group ${quote(flag('group')!)} is not a group path (such as acme or acme/platform)`);

  // An existing file: asked about before anything else, refused without a terminal.
  let replace = values['force'] === true;
  if (!replace && (await exists(envFile))) {
    if (!prompt) throw new Stop(1, `${envFile} exists: not overwritten (pass --force to replace it)`);
    const answer = await prompt.ask(`${envFile} exists. Replace it?`, 'y/N');
    if (!/^y(es)?$/i.test(answer)) throw new Stop(1, `${envFile} left as it was`);
    replace = true;
  }

  // GitLab and the public URL.
  const gitlabFlag = flag('gitlab-url');
  const gitlab =
    gitlabFlag !== undefined || !prompt
      ? gitlabUrlOf(gitlabFlag ?? DEFAULT_GITLAB, '--gitlab-url')
      : await askValid(
          () => prompt.ask('GitLab URL', DEFAULT_GITLAB),
          (answer) => gitlabUrlOf(answer, 'the GitLab URL'),
        );
  if (gitlab.warning) warn(gitlab.warning);
  const gitlabCom = new URL(gitlab.url).hostname.toLowerCase() === 'gitlab.com';
  const defaultUrl = gateway ? 'http://localhost:4180' : 'http://localhost:3000';
  const urlFlag = flag('url');
  const what = gateway ? 'the gateway' : 'the app';
  const publicUrl =
    urlFlag !== undefined || !prompt
      ? publicUrlOf(urlFlag ?? defaultUrl, '--url')
      : await askValid(
          () => prompt.ask(`Public URL of ${what}`, defaultUrl),
          (answer) => publicUrlOf(answer, 'the public URL'),
        );
  if (publicUrl.warning) warn(publicUrl.warning);

  // The access policy, and the scopes it needs.
  let allow = flag('allow');
  let require = flag('require');
  let scopes: string[];
  if (prompt && (allow === undefined || require === undefined)) {
    scopes = await askValid(
      async () => {
        if (flag('allow') === undefined)
          allow = await prompt.ask(
            'Who may sign in (LABGATE_ALLOW, e.g. group:acme>=developer; empty: anyone)',
          );
        if (flag('require') === undefined)
          require = await prompt.ask('What every user must be (LABGATE_REQUIRE)', 'active');
        return '';
      },
      () => scopesFor(allow || undefined, require || undefined),
    );
  } else {
    try {
      scopes = await scopesFor(allow || undefined, require || undefined);
    } catch (error) {
      // Name the flags, not the variables, when the values came from flags.
      if (error instanceof Stop)
        throw usage(
          error.message.replace(/^LABGATE_ALLOW/, '--allow').replace(/^LABGATE_REQUIRE/, '--require'),
        );
      throw error;
    }
  }
  allow = allow?.trim() || undefined;
  require = require?.trim() || undefined;

  // Who owns the application.
  let adminToken = adminFlag ?? (flag('group') === undefined ? envToken : undefined);
  if (gitlabCom && adminToken !== undefined) {
    if (adminFlag !== undefined)
      throw usage('gitlab.com has no Applications API for its users: register a user or group application');
    warn('LABGATE_ADMIN_TOKEN is ignored: gitlab.com has no Applications API for its users');
    adminToken = undefined;
  }
  if (gitlabCom && values['instance'])
    throw usage(
      'gitlab.com has no instance-wide applications of yours: register a user or group application',
    );
  let owner: Owner;
  if (flag('group') !== undefined) owner = { kind: 'group', path: flag('group')! };
  else if (values['instance'] || adminToken !== undefined) owner = { kind: 'instance' };
  else if (!prompt) owner = { kind: 'user' };
  else {
    const choices = gitlabCom ? 'user or group' : 'user, group or instance';
    owner = await askValid(
      () => prompt.ask(`Register the application for your ${choices}?`, 'user'),
      async (answer): Promise<Owner> => {
        const choice = answer.toLowerCase();
        if (choice === 'user') return { kind: 'user' };
        if (choice === 'instance' && !gitlabCom) return { kind: 'instance' };
        if (choice === 'group') {
          const path = await askValid(
            () => prompt.ask('Group path (e.g. acme/platform)'),
            (text) => {
              if (!GROUP_PATH.test(text)) throw usage(`${quote(text)} is not a group path`);
              return text;
            },
          );
          return { kind: 'group', path };
        }
        throw usage(`answer ${choices}`);
      },
    );
    if (owner.kind === 'instance' && adminToken === undefined) {
      const token = await prompt.askSecret(
        "An administrator's personal access token (scope api) to create it through the API (empty: by hand)",
      );
      if (token) adminToken = token;
    }
  }

  const redirectUri = `${publicUrl.url}${gateway ? '/oauth2/callback' : '/auth/callback'}`;
  const name = flag('name')?.trim() || `labgate (${new URL(publicUrl.url).host})`;
  const page = registrationPage(gitlab.url, owner);

  // The credentials: from GitLab's Applications API, from flags, or pasted.
  let clientId = flag('client-id')?.trim();
  let clientSecret = flag('client-secret')?.trim();
  if (!prompt && adminToken === undefined && (!clientId || !clientSecret)) {
    throw usage(
      `--yes needs --client-id and --client-secret${gitlabCom ? '' : ' (or --admin-token to create the application)'}`,
    );
  }
  out();
  if (adminToken !== undefined) {
    // No more questions: a Ctrl+C during the call is the terminal's again.
    prompt?.close();
    const created = await createApplication({
      gitlab: gitlab.url,
      token: adminToken,
      name,
      redirectUri,
      scopes,
    });
    clientId = created.clientId;
    clientSecret = created.clientSecret;
    out(`${paint('green', '✓')} Created the instance-wide application ${quote(name)} in GitLab:`);
    if (created.id !== null) out(`    ${gitlab.url}/admin/applications/${created.id}`);
    out(`    Application ID:  ${created.clientId}`);
    out(`    Redirect URI:    ${created.callbackUrl || redirectUri}`);
    out(`    Scopes:          ${scopes.join(' ')}`);
    out(`    Confidential:    ${created.confidential ? 'yes' : 'no'}`);
    out('    Its secret goes into the env file only: GitLab shows it this once.');
    if (created.callbackUrl && created.callbackUrl !== redirectUri)
      warn(`GitLab registered the redirect URI ${quote(created.callbackUrl)}, not ${quote(redirectUri)}`);
  } else {
    out(paint('bold', 'Register the OAuth application in GitLab:'));
    out();
    out(`  Page:          ${paint('bold', page.url)}`);
    out(`                 (${page.how})`);
    out(`  Name:          ${name}`);
    out(`  Redirect URI:  ${paint('bold', redirectUri)}`);
    out(`  Confidential:  yes (keep it ticked: ${what} keeps the secret on the server)`);
    out(`  Scopes:        ${paint('bold', scopes.join(' '))}`);
    for (const scope of scopes) out(`                 ${scope}: ${SCOPE_REASONS[scope] ?? ''}`);
    out('                 (tick these only: no other scope is needed)');
    out();
    out('Save it, then copy the Application ID and the Secret GitLab shows (the secret is shown only once).');
  }

  if (prompt && adminToken === undefined) {
    if (!clientId) {
      clientId = await askValid(
        () => prompt.ask('Application ID (empty: fill in GITLAB_CLIENT_ID later)'),
        (answer) => {
          if (/\s/.test(answer)) throw usage('an Application ID has no spaces');
          return answer;
        },
      );
    }
    if (clientId && !clientSecret) {
      clientSecret = await askValid(
        () => prompt.askSecret('Secret (not shown while typed)'),
        (answer) => {
          if (answer === '') throw usage('the application is confidential: paste its Secret');
          if (/\s/.test(answer)) throw usage('a Secret has no spaces');
          return answer;
        },
      );
    }
  }
  if (clientId && /\s/.test(clientId)) throw usage('--client-id has spaces: paste the Application ID alone');
  if (clientSecret && /\s/.test(clientSecret))
    throw usage('--client-secret has spaces: paste the Secret alone');
  prompt?.close();

  const lines = [
    `# labgate: written by labgate init. It holds secrets: keep it mode 0600 and out of version control.`,
    `# The GitLab application: ${page.url} (redirect URI ${redirectUri})`,
    envLine('GITLAB_URL', gitlab.url),
    envLine('GITLAB_CLIENT_ID', clientId ?? ''),
    envLine('GITLAB_CLIENT_SECRET', clientSecret ?? ''),
    envLine('GITLAB_SCOPES', scopes.join(' ')),
    envLine('LABGATE_URL', publicUrl.url),
    envLine('LABGATE_SECRET', randomBytes(32).toString('base64url')),
    ...(allow !== undefined ? [envLine('LABGATE_ALLOW', allow)] : []),
    ...(require !== undefined ? [envLine('LABGATE_REQUIRE', require)] : []),
  ];
  await writePrivateFile(envFile, `${lines.join('\n')}\n`, replace);
  out();
  out(`${paint('green', '✓')} Wrote ${envFile} (mode 0600) with a new LABGATE_SECRET`);
  out(
    `  Load it with node --env-file=${quote(envFile)} …, or in a shell: set -a; . ${quote(envFile)}; set +a`,
  );
  if (gateway) out('  Then: labgate gateway --upstream http://127.0.0.1:3000 (the app behind it)');

  if (!clientId || !clientSecret) {
    out(
      `  Add GITLAB_CLIENT_ID and GITLAB_CLIENT_SECRET to it, then run: labgate doctor --env-file ${quote(envFile)}`,
    );
    return 0;
  }
  if (values['no-check'] === true) return 0;
  // The doctor, like the app, lets the environment win over the file: say when that hides a value.
  const written: Record<string, string> = {
    GITLAB_URL: gitlab.url,
    GITLAB_CLIENT_ID: clientId,
    GITLAB_CLIENT_SECRET: clientSecret,
    GITLAB_SCOPES: scopes.join(' '),
    LABGATE_URL: publicUrl.url,
    ...(allow !== undefined ? { LABGATE_ALLOW: allow } : {}),
    ...(require !== undefined ? { LABGATE_REQUIRE: require } : {}),
  };
  for (const [variable, value] of Object.entries(written)) {
    const set = process.env[variable];
    if (set !== undefined && set !== value)
      warn(`${variable} is also set in this environment, which wins over the file: the checks below use it`);
  }
  if (process.env['LABGATE_SECRET'])
    warn('LABGATE_SECRET is also set in this environment, which wins over the file');
  out();
  const { doctorCommand } = await import('./doctor.js');
  return doctorCommand(['--env-file', envFile, ...(gateway ? ['--gateway'] : [])]);
}
