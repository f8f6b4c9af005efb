/**
 * `labgate init` as users run it: the built command in its own process, with flags (`--yes`) and on a
 * pseudo-terminal answering its questions, against the emulator as the GitLab. What it prints (the
 * page, the redirect URI, the scopes), the env file it writes (content, quoting, mode 0600 whatever
 * the umask, never over an existing file unasked) and the application it creates with an admin token.
 * `npm test` builds first; run `npm run build` before running this file alone.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnv } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';

const CLI = fileURLToPath(new URL('../../dist/cli/index.js', import.meta.url));
const APP_ID = '3b7e0c2f5a9d14e68f21c0b7a4d39e5f6c8b1a2d3e4f5061728394a5b6c7d8e9';
const APP_SECRET = 'gloas-7d1f0a9c3e5b8d2f4a6c8e0b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f';

let gitlab: RunningEmulator;
let dir: string;
const children: ChildProcess[] = [];

/** The environment of a run: this one without anything labgate or a colour choice would read. */
function environment(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: dir, NO_COLOR: '1', ...extra };
  for (const name of Object.keys(env)) {
    if (/^(GITLAB_|LABGATE_|OAUTH2_PROXY_)/.test(name) && !(name in extra)) delete env[name];
  }
  return env;
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/cli/index.js is missing: run `npm run build` first');
  gitlab = await startEmulator({ port: 0 });
});
afterAll(() => gitlab.close());
beforeEach(() => {
  gitlab.control.reset();
  dir = mkdtempSync(join(tmpdir(), 'labgate-init-'));
});
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `labgate init ARGS` under umask 000, so any mode the file gets is the one init chose. */
function init(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const child = spawn('sh', ['-c', 'umask 000; exec "$0" "$@"', process.execPath, CLI, 'init', ...args], {
    cwd: dir,
    env: environment(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

const mode = (path: string) => statSync(path).mode & 0o777;
const readEnv = (path: string) => parseEnv(readFileSync(path, 'utf8')) as Record<string, string>;

/** The flags every `--yes` run needs, writing to `file` in the test's folder. */
function yes(file = 'labgate.env', extra: string[] = []): string[] {
  return [
    '--yes',
    '--no-check',
    '-f',
    file,
    '--client-id',
    'app-id',
    '--client-secret',
    'app-secret',
    ...extra,
  ];
}

/** The value printed after a label such as `Scopes:`. */
function printed(output: string, label: string): string | undefined {
  return new RegExp(`^\\s*${label}:\\s+(.+)$`, 'm').exec(output)?.[1]?.trim();
}

describe('labgate init --yes', () => {
  it('writes the env file with mode 0600 under umask 000, the values given and a new secret', async () => {
    const { code, stdout, stderr } = await init(
      yes('labgate.env', [
        '--gitlab-url',
        'https://gitlab.example.com/',
        '--url',
        'https://app.example.com/',
        '--allow',
        'group:acme/platform>=developer,user:alice',
        '--require',
        'active,2fa',
      ]),
    );
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const file = join(dir, 'labgate.env');
    expect(mode(file)).toBe(0o600);
    const env = readEnv(file);
    expect(env).toEqual({
      GITLAB_URL: 'https://gitlab.example.com',
      GITLAB_CLIENT_ID: 'app-id',
      GITLAB_CLIENT_SECRET: 'app-secret',
      GITLAB_SCOPES: 'openid profile email read_api',
      LABGATE_URL: 'https://app.example.com',
      LABGATE_SECRET: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/),
      LABGATE_ALLOW: 'group:acme/platform>=developer,user:alice',
      LABGATE_REQUIRE: 'active,2fa',
    });
    expect(stdout).toContain(`Wrote ${file} (mode 0600)`);
    // Nothing secret on the terminal.
    expect(stdout).not.toContain('app-secret');
    expect(stdout).not.toContain(env['LABGATE_SECRET']);

    const again = await init(yes('other.env'));
    expect(again.code).toBe(0);
    expect(readEnv(join(dir, 'other.env'))['LABGATE_SECRET']).not.toBe(env['LABGATE_SECRET']);
  });

  it('quotes values so that Node and a POSIX shell read back exactly what was given', async () => {
    const given = {
      GITLAB_URL: "https://example.com/o'gitlab",
      GITLAB_CLIENT_ID: "id'with'quotes",
      GITLAB_CLIENT_SECRET: 'a$b"c\\d`e',
    };
    const { code, stderr } = await init([
      '--yes',
      '--no-check',
      '-f',
      'labgate.env',
      '--gitlab-url',
      given.GITLAB_URL,
      '--client-id',
      given.GITLAB_CLIENT_ID,
      '--client-secret',
      given.GITLAB_CLIENT_SECRET,
    ]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const file = join(dir, 'labgate.env');
    expect(readEnv(file)).toMatchObject(given);
    const names = Object.keys(given);
    const shell = spawn('sh', [
      '-c',
      `set -a; . "${file}"; printf '%s\\n' ${names.map((n) => `"$${n}"`).join(' ')}`,
    ]);
    let seen = '';
    shell.stdout.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
    });
    await new Promise((resolve) => shell.on('close', resolve));
    expect(seen).toBe(`${Object.values(given).join('\n')}\n`);
  });

  it('never overwrites an existing file without --force, and --force replaces it with mode 0600', async () => {
    const file = join(dir, 'labgate.env');
    writeFileSync(file, 'KEEP=1\n');
    chmodSync(file, 0o644);
    const refused = await init(yes());
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      `labgate init: ${file} exists: not overwritten (pass --force to replace it)\n`,
    );
    expect(readFileSync(file, 'utf8')).toBe('KEEP=1\n');

    const forced = await init(yes('labgate.env', ['--force']));
    expect(forced.code).toBe(0);
    expect(readEnv(file)['GITLAB_CLIENT_ID']).toBe('app-id');
    expect(mode(file)).toBe(0o600);
  });

  it('replaces a symbolic link itself under --force, never writing through it', async () => {
    const target = join(dir, 'elsewhere');
    writeFileSync(target, 'UNTOUCHED=1\n');
    const link = join(dir, 'labgate.env');
    symlinkSync(target, link);
    expect((await init(yes())).code).toBe(1);
    expect((await init(yes('labgate.env', ['--force']))).code).toBe(0);
    expect(readFileSync(target, 'utf8')).toBe('UNTOUCHED=1\n');
    expect(lstatSync(link).isSymbolicLink()).toBe(false);
    expect(mode(link)).toBe(0o600);
  });

  it.each([
    [
      'a user application for an app',
      [],
      'https://gitlab.example.com/-/user_settings/applications',
      'https://app.example.com/auth/callback',
    ],
    [
      'a group application for the gateway',
      ['--group', 'acme/platform', '--gateway'],
      'https://gitlab.example.com/groups/acme/platform/-/settings/applications',
      'https://app.example.com/oauth2/callback',
    ],
    [
      'an instance-wide application',
      ['--instance'],
      'https://gitlab.example.com/admin/applications',
      'https://app.example.com/auth/callback',
    ],
  ])('prints the page, the redirect URI and confidential for %s', async (_name, extra, page, redirect) => {
    const { code, stdout } = await init(
      yes('labgate.env', [
        '--gitlab-url',
        'https://gitlab.example.com',
        '--url',
        'https://app.example.com',
        ...extra,
      ]),
    );
    expect(code).toBe(0);
    expect(printed(stdout, 'Page')).toBe(page);
    expect(printed(stdout, 'Redirect URI')).toBe(redirect);
    expect(printed(stdout, 'Confidential')).toMatch(/^yes\b/);
    expect(printed(stdout, 'Scopes')).toBe('openid profile email');
  });

  it('keeps the sub-path of a GitLab under a relative URL root, and the defaults', async () => {
    const sub = await init(yes('a.env', ['--gitlab-url', 'https://example.com/gitlab/']));
    expect(printed(sub.stdout, 'Page')).toBe('https://example.com/gitlab/-/user_settings/applications');
    expect(readEnv(join(dir, 'a.env'))['GITLAB_URL']).toBe('https://example.com/gitlab');

    const defaults = await init(yes('b.env'));
    expect(printed(defaults.stdout, 'Page')).toBe('https://gitlab.com/-/user_settings/applications');
    expect(printed(defaults.stdout, 'Redirect URI')).toBe('http://localhost:3000/auth/callback');
    const gateway = await init(yes('c.env', ['--gateway']));
    expect(printed(gateway.stdout, 'Redirect URI')).toBe('http://localhost:4180/oauth2/callback');
  });

  it.each([
    ['no rules', [], 'openid profile email'],
    ['a group without a level (the groups claim answers)', ['--allow', 'group:acme'], 'openid profile email'],
    ['a group with a level', ['--allow', 'group:acme>=developer'], 'openid profile email read_api'],
    ['a project', ['--allow', 'project:acme/app'], 'openid profile email read_api'],
    ['an email domain', ['--allow', 'email:@acme.com'], 'openid profile email'],
    ['a user', ['--allow', 'user:alice'], 'openid profile email'],
    ['2fa required', ['--require', '2fa'], 'openid profile email read_user'],
    ['human required', ['--require', 'active,human'], 'openid profile email read_user'],
    ['only active (userinfo answers it)', ['--require', 'active'], 'openid profile email'],
    [
      'a level and 2fa (read_api covers the user too)',
      ['--allow', 'group:acme>=maintainer', '--require', '2fa'],
      'openid profile email read_api',
    ],
  ])('asks for the least scopes: %s', async (_name, extra, scopes) => {
    const { code, stdout } = await init(yes('labgate.env', extra));
    expect(code).toBe(0);
    expect(printed(stdout, 'Scopes')).toBe(scopes);
    expect(readEnv(join(dir, 'labgate.env'))['GITLAB_SCOPES']).toBe(scopes);
  });

  it.each([
    ['a malformed rule', ['--allow', 'group:'], /LABGATE_ALLOW|--allow/],
    ['an unknown requirement', ['--require', 'wizard'], /unknown requirement "wizard"/],
    ['a public URL with a path', ['--url', 'https://app.example.com/app'], /origin without a path/],
    ['a public URL that is no URL', ['--url', 'app.example.com'], /is not a URL/],
    ['plain http to a remote GitLab', ['--gitlab-url', 'http://gitlab.example.com'], /use https:\/\//],
    ['a group path with a space', ['--group', 'acme platform'], /is not a group path/],
    ['an instance application on gitlab.com', ['--instance'], /gitlab\.com has no instance-wide/],
    ['--group with --instance', ['--group', 'acme', '--instance'], /cannot go with --instance/],
    ['an unknown flag', ['--colour'], /unknown flag --colour/],
    ['a flag without its value', ['--url'], /--url needs a value/],
  ])('refuses %s with one line and exit 2, writing nothing', async (_name, extra, message) => {
    const { code, stdout, stderr } = await init(yes('labgate.env', extra).concat());
    expect(code).toBe(2);
    expect(stderr).toMatch(message);
    expect(stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(stderr).not.toMatch(/\n\s+at /);
    expect(stdout).toBe('');
    expect(existsSync(join(dir, 'labgate.env'))).toBe(false);
  });

  it('refuses an admin token for gitlab.com, which has no Applications API for its users', async () => {
    const { code, stderr } = await init(['--yes', '-f', 'labgate.env', '--admin-token', 'x']);
    expect(code).toBe(2);
    expect(stderr).toBe(
      'labgate init: gitlab.com has no Applications API for its users: register a user or group application\n',
    );
  });

  it('wants the credentials (or an admin token) with --yes', async () => {
    const { code, stderr } = await init([
      '--yes',
      '-f',
      'labgate.env',
      '--gitlab-url',
      'https://gitlab.example.com',
    ]);
    expect(code).toBe(2);
    expect(stderr).toBe(
      'labgate init: --yes needs --client-id and --client-secret (or --admin-token to create the application)\n',
    );
    expect(existsSync(join(dir, 'labgate.env'))).toBe(false);
  });

  it('asks nothing without a terminal unless --yes says so', async () => {
    const { code, stderr } = await init(['-f', 'labgate.env']);
    expect(code).toBe(2);
    expect(stderr).toMatch(/standard input is not a terminal; pass --yes/);
  });
});

describe('labgate init with an admin token (self-managed GitLab)', () => {
  const adminToken = () => gitlab.control.mintToken({ user: 'root', scopes: ['api'] }).access_token;

  it('creates the instance-wide application through the API, says what it created, and writes its credentials', async () => {
    const token = adminToken();
    const before = gitlab.control.model().applications.length;
    const { code, stdout, stderr } = await init(
      [
        '--yes',
        '--no-check',
        '-f',
        'labgate.env',
        '--gitlab-url',
        gitlab.url,
        '--url',
        'https://app.example.com',
      ].concat(['--allow', 'group:acme/platform>=developer', '--name', 'wiki']),
      { LABGATE_ADMIN_TOKEN: token },
    );
    expect(code).toBe(0);
    expect(stderr).toBe('');
    const applications = gitlab.control.model().applications;
    expect(applications).toHaveLength(before + 1);
    const created = applications.at(-1)!;
    expect(created).toMatchObject({
      name: 'wiki',
      redirectUris: ['https://app.example.com/auth/callback'],
      scopes: ['openid', 'profile', 'email', 'read_api'],
      confidential: true,
    });
    expect(stdout).toContain('Created the instance-wide application "wiki"');
    expect(stdout).toContain(`${gitlab.url}/admin/applications/${created.id}`);
    expect(printed(stdout, 'Application ID')).toBe(created.uid);
    expect(printed(stdout, 'Redirect URI')).toBe('https://app.example.com/auth/callback');
    expect(printed(stdout, 'Scopes')).toBe('openid profile email read_api');
    expect(printed(stdout, 'Confidential')).toBe('yes');
    expect(stdout).not.toContain(created.secret);
    expect(stdout).not.toContain(token);

    const file = join(dir, 'labgate.env');
    const env = readEnv(file);
    expect(env['GITLAB_CLIENT_ID']).toBe(created.uid);
    expect(env['GITLAB_CLIENT_SECRET']).toBe(created.secret);
    expect(readFileSync(file, 'utf8')).not.toContain(token);
    expect(mode(file)).toBe(0o600);

    // The credentials written are ones GitLab accepts: a made-up code fails on the grant, not the client.
    const probe = await fetch(`${gitlab.url}/oauth/token`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${btoa(`${env['GITLAB_CLIENT_ID']}:${env['GITLAB_CLIENT_SECRET']}`)}`,
      },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: 'made-up',
        redirect_uri: 'https://app.example.com/auth/callback',
      }),
    });
    expect(await probe.json()).toMatchObject({ error: 'invalid_grant' });
  });

  it('takes --admin-token too, for the gateway', async () => {
    const { code, stdout } = await init([
      '--yes',
      '--no-check',
      '-f',
      'labgate.env',
      '--gitlab-url',
      gitlab.url,
      '--url',
      'https://wiki.example.com',
      '--gateway',
      '--admin-token',
      adminToken(),
    ]);
    expect(code).toBe(0);
    expect(gitlab.control.model().applications.at(-1)!.redirectUris).toEqual([
      'https://wiki.example.com/oauth2/callback',
    ]);
    expect(stdout).toContain('Created the instance-wide application "labgate (wiki.example.com)"');
  });

  it.each([
    [
      "a non-admin's token",
      () => gitlab.control.mintToken({ user: 'alice', scopes: ['api'] }).access_token,
      /\(403\)/,
    ],
    [
      'a token without the api scope',
      () => gitlab.control.mintToken({ user: 'root', scopes: ['read_api'] }).access_token,
      /\(403\)/,
    ],
    ['an unknown token', () => 'f'.repeat(64), /\(401\)/],
  ])('refuses %s: exit 1, no application, nothing written', async (_name, token, message) => {
    const before = gitlab.control.model().applications.length;
    const { code, stderr } = await init(
      ['--yes', '--no-check', '-f', 'labgate.env', '--gitlab-url', gitlab.url],
      { LABGATE_ADMIN_TOKEN: token() },
    );
    expect(code).toBe(1);
    expect(stderr).toMatch(message);
    expect(stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(gitlab.control.model().applications).toHaveLength(before);
    expect(existsSync(join(dir, 'labgate.env'))).toBe(false);
  });

  it('says when GitLab cannot be reached', async () => {
    const closed = await startEmulator({ port: 0 });
    const url = closed.url;
    await closed.close();
    const { code, stderr } = await init(['--yes', '--no-check', '-f', 'labgate.env', '--gitlab-url', url], {
      LABGATE_ADMIN_TOKEN: 'token',
    });
    expect(code).toBe(1);
    expect(stderr).toMatch(/cannot reach GitLab at .*\(ECONNREFUSED\): no application created/);
  });
});

describe("labgate init runs the doctor's checks on what it wrote", () => {
  const flags = (secret: string, extra: string[] = [], url = 'http://localhost:3000') => [
    '--yes',
    '-f',
    'labgate.env',
    '--gitlab-url',
    gitlab.url,
    '--url',
    url,
    '--client-id',
    APP_ID,
    '--client-secret',
    secret,
    ...extra,
  ];

  it('passes them with the credentials of a registered application', async () => {
    const { code, stdout } = await init(flags(APP_SECRET));
    expect(stdout).toContain(`labgate doctor: the app's configuration against GitLab at ${gitlab.url}`);
    expect(stdout).toContain(join(dir, 'labgate.env'));
    expect(stdout).toMatch(/\d+ ✓ {2}\d+ ⚠ {2}0 ✗/);
    expect(code).toBe(0);
  });

  it('fails them (exit 1) with a wrong secret, the file written all the same', async () => {
    const { code, stdout } = await init(flags('gloas-wrong'));
    expect(code).toBe(1);
    expect(stdout).toMatch(/^✗ /m);
    expect(stdout).toMatch(/[1-9]\d* ✗/);
    expect(readEnv(join(dir, 'labgate.env'))['GITLAB_CLIENT_SECRET']).toBe('gloas-wrong');
  });

  it("checks the gateway's configuration for --gateway", async () => {
    const { stdout } = await init(flags(APP_SECRET, ['--gateway'], 'http://localhost:4180'));
    expect(stdout).toContain("labgate doctor: the gateway's configuration");
    expect(stdout).toContain('http://localhost:4180/oauth2/callback');
  });

  it('says when the environment holds a value that wins over the file', async () => {
    const { stdout } = await init(flags(APP_SECRET), { GITLAB_CLIENT_ID: 'from-the-shell' });
    expect(stdout).toContain('GITLAB_CLIENT_ID is also set in this environment, which wins over the file');
  });
});

describe("the emulator's Applications API", () => {
  const create = (token: string | null, body: Record<string, unknown>) =>
    fetch(`${gitlab.url}/api/v4/applications`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });
  const admin = () => gitlab.control.mintToken({ user: 'root', scopes: ['api'] }).access_token;
  const valid = { name: 'app', redirect_uri: 'https://app.example.com/cb', scopes: 'openid read_api' };

  it("answers 201 with GitLab's entity, confidential by default, the secret shown once", async () => {
    const response = await create(admin(), valid);
    expect(response.status).toBe(201);
    const body = (await response.json()) as Record<string, unknown>;
    expect(Object.keys(body)).toEqual([
      'id',
      'application_id',
      'application_name',
      'secret',
      'callback_url',
      'confidential',
    ]);
    expect(body).toMatchObject({
      application_id: expect.stringMatching(/^[0-9a-f]{64}$/),
      application_name: 'app',
      secret: expect.stringMatching(/^gloas-[0-9a-f]{64}$/),
      callback_url: 'https://app.example.com/cb',
      confidential: true,
    });
    const publicApp = await create(admin(), { ...valid, confidential: false });
    expect(await publicApp.json()).toMatchObject({ confidential: false });
  });

  it('refuses without a token (401), for a non-admin (403) and a read-only token (403)', async () => {
    expect((await create(null, valid)).status).toBe(401);
    const alice = gitlab.control.mintToken({ user: 'alice', scopes: ['api'] }).access_token;
    const nonAdmin = await create(alice, valid);
    expect(nonAdmin.status).toBe(403);
    expect(await nonAdmin.json()).toEqual({ message: '403 Forbidden' });
    const readOnly = gitlab.control.mintToken({ user: 'root', scopes: ['read_api'] }).access_token;
    expect(await (await create(readOnly, valid)).json()).toMatchObject({ error: 'insufficient_scope' });
  });

  it("gives Grape's and the model's 400s", async () => {
    const missing = await create(admin(), {});
    expect(missing.status).toBe(400);
    expect(await missing.json()).toEqual({
      error: 'name is missing, redirect_uri is missing, scopes is missing, scopes is empty',
    });
    const bad = await create(admin(), { name: 'x', redirect_uri: 'http://', scopes: 'api nope' });
    expect(await bad.json()).toEqual({
      message: {
        redirect_uri: ['must be a valid URI.'],
        scopes: ["doesn't match configured on the server."],
      },
    });
    const script = await create(admin(), { name: 'x', redirect_uri: 'javascript://alert()', scopes: 'api' });
    expect(await script.json()).toEqual({ message: { redirect_uri: ['is forbidden by the server.'] } });
  });
});

/** A run of the built command on a pseudo-terminal (util-linux `script`), answered as a user types. */
function terminal(args: string[]) {
  const command = [process.execPath, CLI, 'init', ...args]
    .map((a) => `'${a.replace(/'/g, "'\\''")}'`)
    .join(' ');
  const child = spawn('script', ['-qfec', command, '/dev/null'], {
    cwd: dir,
    env: environment({ TERM: 'xterm' }),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  let seen = 0;
  let waiting: { text: string; resolve: () => void } | undefined;
  // Readline redraws its line with CSI sequences; the text read is what a user sees.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: removing terminal escapes is the point
  const clean = () => output.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
  const check = () => {
    if (!waiting) return;
    const at = clean().indexOf(waiting.text, seen);
    if (at === -1) return;
    seen = at + waiting.text.length;
    const { resolve } = waiting;
    waiting = undefined;
    resolve();
  };
  child.stdout!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    check();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  /** Waits until `text` appears after what was already waited for. */
  const waitFor = (text: string) =>
    Promise.race([
      new Promise<void>((resolve) => {
        waiting = { text, resolve };
        check();
      }),
      exited.then(() => {
        throw new Error(`the command ended before printing ${JSON.stringify(text)}:\n${clean()}`);
      }),
    ]);
  return {
    waitFor,
    /** Waits for a prompt, then types `answer` and Enter (readline drops a line typed with no question open). */
    async answer(prompt: string, answer: string): Promise<void> {
      await waitFor(prompt);
      child.stdin!.write(`${answer}\r`);
    },
    type(data: string) {
      child.stdin!.write(data);
    },
    exited,
    output: clean,
  };
}

describe('labgate init on a terminal', () => {
  it('asks, prints what to register, reads the secret without echo and writes the env file', async () => {
    const run = terminal(['-f', 'labgate.env', '--no-check']);
    await run.answer('GitLab URL [https://gitlab.com]: ', gitlab.url);
    await run.answer('Public URL of the app [http://localhost:3000]: ', '');
    await run.answer('Who may sign in', 'group:acme/platform>=developer');
    await run.answer('What every user must be (LABGATE_REQUIRE) [active]: ', '');
    await run.answer('Register the application for your user, group or instance? [user]: ', 'group');
    await run.answer('Group path', 'acme');
    await run.answer('Application ID', APP_ID);
    await run.answer('Secret (not shown while typed): ', APP_SECRET);
    expect(await run.exited).toBe(0);
    const output = run.output();
    expect(printed(output, 'Page')).toBe(`${gitlab.url}/groups/acme/-/settings/applications`);
    expect(printed(output, 'Redirect URI')).toBe('http://localhost:3000/auth/callback');
    expect(printed(output, 'Scopes')).toBe('openid profile email read_api');
    expect(output).not.toContain(APP_SECRET);
    const file = join(dir, 'labgate.env');
    expect(mode(file)).toBe(0o600);
    expect(readEnv(file)).toMatchObject({
      GITLAB_URL: gitlab.url,
      GITLAB_CLIENT_ID: APP_ID,
      GITLAB_CLIENT_SECRET: APP_SECRET,
      GITLAB_SCOPES: 'openid profile email read_api',
      LABGATE_URL: 'http://localhost:3000',
      LABGATE_ALLOW: 'group:acme/platform>=developer',
      LABGATE_REQUIRE: 'active',
    });
  });

  it('asks again after a bad answer, and creates the application with an admin token typed unseen', async () => {
    const token = gitlab.control.mintToken({ user: 'root', scopes: ['api'] }).access_token;
    const run = terminal(['-f', 'labgate.env', '--no-check', '--gateway', '--gitlab-url', gitlab.url]);
    const prompt = 'Public URL of the gateway [http://localhost:4180]: ';
    await run.answer(prompt, 'https://wiki.example.com/x');
    await run.waitFor('origin without a path');
    await run.answer(prompt, 'https://wiki.example.com');
    await run.answer('Who may sign in', 'group:');
    await run.answer('What every user must be', '');
    await run.waitFor('LABGATE_ALLOW');
    await run.answer('Who may sign in', 'user:alice');
    await run.answer('What every user must be', 'none');
    await run.answer('[user]: ', 'instance');
    await run.answer('(empty: by hand): ', token);
    expect(await run.exited).toBe(0);
    const created = gitlab.control.model().applications.at(-1)!;
    expect(created.redirectUris).toEqual(['https://wiki.example.com/oauth2/callback']);
    expect(created.scopes).toEqual(['openid', 'profile', 'email']);
    expect(run.output()).toContain('Created the instance-wide application');
    expect(run.output()).not.toContain(token);
    expect(readEnv(join(dir, 'labgate.env'))).toMatchObject({
      GITLAB_CLIENT_ID: created.uid,
      GITLAB_CLIENT_SECRET: created.secret,
      LABGATE_ALLOW: 'user:alice',
      LABGATE_REQUIRE: 'none',
    });
  });

  it('asks before replacing an existing file, and keeps it on no', async () => {
    const file = join(dir, 'labgate.env');
    writeFileSync(file, 'KEEP=1\n');
    const run = terminal(['-f', 'labgate.env']);
    await run.answer('exists. Replace it? [y/N]: ', 'n');
    expect(await run.exited).toBe(1);
    expect(run.output()).toContain('left as it was');
    expect(readFileSync(file, 'utf8')).toBe('KEEP=1\n');
  });

  it('stops on Ctrl+C with exit 130, writing nothing', async () => {
    const run = terminal(['-f', 'labgate.env', '--gitlab-url', 'https://gitlab.example.com']);
    await run.answer('Public URL of the app', '');
    await run.answer('Who may sign in', '');
    await run.answer('What every user must be', '');
    await run.answer('Register the application', '');
    await run.waitFor('Application ID');
    run.type('\x03');
    expect(await run.exited).toBe(130);
    expect(run.output()).toContain('interrupted: nothing written');
    expect(existsSync(join(dir, 'labgate.env'))).toBe(false);
  });
});
