#!/usr/bin/env node
/**
 * The `labgate` command line: `labgate emulator`, `labgate demo`, `labgate gateway`, `labgate init`,
 * `labgate doctor`, `labgate secret`. Each command loads its code lazily, so `labgate --help` stays
 * instant; `labgate <command> --help` shows each one's usage with examples, and a bad flag or value is
 * one line on stderr with exit code 2.
 */
import { parseArgs } from 'node:util';

const HELP = `labgate: Sign in with GitLab, GitLab-based access control, and a GitLab emulator.

Usage:
  labgate init [options]       Set up an app or the gateway: where to register the OAuth application in
                               GitLab and what to enter there, then a .env (mode 0600) and the doctor's checks
  labgate doctor [options]     Check a configuration against GitLab and say how to fix what is wrong
  labgate gateway [options]    GitLab sign-in and access rules in front of any app (an oauth2-proxy drop-in)
  labgate gateway check        Check a gateway configuration (exit 1 on errors); --user explains a decision
  labgate emulator [options]   Run a GitLab emulator (OAuth, OIDC, API v4) on loopback
  labgate demo [options]       Run the emulator with the demo fixtures (npm start runs the full demo)
  labgate secret               Print a new LABGATE_SECRET (32 random bytes, base64url)
  labgate --version

  labgate <command> --help     The options of one command, with examples

Examples:
  npx labgate init                                   # answer a few questions, get a working .env
  labgate doctor                                     # is the configuration in .env right?
  labgate gateway --upstream http://127.0.0.1:3000   # GitLab sign-in in front of an app
  labgate emulator --port 3999                       # a GitLab for tests, offline
  export LABGATE_SECRET=$(labgate secret)
`;

const EMULATOR_OPTIONS = `Options:
  --port <n>                 Port to listen on (default 3999, or PORT; 0 picks a free one)
  --host <addr>              Interface to listen on (default 127.0.0.1)
  --base-path <path>         Serve under a relative URL root, e.g. /gitlab
  --fixtures <file.json>     Users, groups, projects, memberships, shares, applications
                             (default: the demo fixtures that ship with labgate)
  --auto-approve <mode>      page (GitLab's 200 "Redirecting" page, default) or redirect (302)
  --refresh-rotation <mode>  immediate (current GitLab, default) or on-first-use (older GitLab)
  --pkce <mode>              public (PKCE required for public apps, default) or dynamic
  -h, --help                 This text
`;

const EMULATOR_HELP = `labgate emulator: a GitLab that runs offline (OAuth 2.0, OpenID Connect, API v4, the sign-in
and consent pages), for tests and development. It prints its URL, its users with their passwords and its
OAuth applications with their credentials; a control API under /-/emulator/ moves its clock, injects
faults and changes memberships (docs/emulator.md).

Usage:
  labgate emulator [options]

${EMULATOR_OPTIONS}
Examples:
  # The demo users and applications on the usual port
  labgate emulator

  # A free port, your own users and groups, under a sub-path like a self-managed GitLab
  labgate emulator --port 0 --fixtures test/gitlab.json --base-path /gitlab

  # An older GitLab's refresh-token rotation, and plain 302s instead of the "Redirecting" page
  labgate emulator --refresh-rotation on-first-use --auto-approve redirect
`;

const DEMO_HELP = `labgate demo: the GitLab emulator with the demo fixtures (users alice, bob, carol, … with the password
<name>-password; groups acme, acme/platform; the "labgate demo" application whose redirect URIs are
http://localhost:3000/auth/callback and http://localhost:4180/oauth2/callback). npm start runs it with the
example app.

Usage:
  labgate demo [options]

${EMULATOR_OPTIONS}
Examples:
  labgate demo
  labgate demo --port 3999 --host 127.0.0.1
`;

const SECRET_HELP = `labgate secret: print a new LABGATE_SECRET: 32 random bytes from the system's generator, base64url.
To rotate, put the new one first and keep the old one after a comma until old sessions have ended.

Usage:
  labgate secret

Examples:
  export LABGATE_SECRET=$(labgate secret)
  echo "LABGATE_SECRET=$(labgate secret)" >> .env
  LABGATE_SECRET="$(labgate secret),$LABGATE_SECRET"   # rotate
`;

type Command = (args: string[]) => Promise<number>;

/** One line on stderr, `labgate[ command]: message`, and exit code 2. */
function fail(message: string, command?: string): number {
  process.stderr.write(`labgate${command ? ` ${command}` : ''}: ${message}\n`);
  return 2;
}

/** One line for a `parseArgs` error, naming the command and where its flags are listed. */
function argumentError(command: string, error: unknown): number {
  const { code, message } = error as { code?: string; message: string };
  const flag = /'(-[^' ]*)/.exec(message)?.[1] ?? '';
  let text = message.split('\n', 1)[0]!;
  // parseArgs' own first sentence ("Unknown option '--x'"); the rest suggests `--`, no use here.
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') text = `Unknown option '${flag}'`;
  else if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL')
    text = `unexpected argument ${/'([^']*)'/.exec(message)?.[1] ?? ''}`;
  else if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE')
    text = /argument missing/.test(message)
      ? `${/--[a-z-]+/.exec(message)?.[0] ?? flag} needs a value`
      : `${/--[a-z-]+/.exec(message)?.[0] ?? flag} takes no value`;
  return fail(`${text} (labgate ${command} --help lists the flags)`, command);
}

async function emulator(args: string[], demo = false): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        port: { type: 'string' },
        host: { type: 'string' },
        'base-path': { type: 'string' },
        fixtures: { type: 'string' },
        'auto-approve': { type: 'string' },
        'refresh-rotation': { type: 'string' },
        pkce: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    return argumentError(demo ? 'demo' : 'emulator', error);
  }
  if (values['help']) {
    process.stdout.write(demo ? DEMO_HELP : EMULATOR_HELP);
    return 0;
  }
  const command = demo ? 'demo' : 'emulator';
  const failed = (message: string) => fail(message, command);
  const rawPort = String(values['port'] ?? process.env['PORT'] ?? 3999);
  const port = /^\d{1,5}$/.test(rawPort) ? Number(rawPort) : Number.NaN;
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    return failed(`--port ${JSON.stringify(rawPort)} is not a port number (0 to 65535)`);
  const { startEmulator, FixtureError } = await import('../emulator/index.js');
  const options: Parameters<typeof startEmulator>[0] = { port, host: String(values['host'] ?? '127.0.0.1') };
  if (values['base-path']) options.basePath = String(values['base-path']);
  if (values['fixtures']) options.fixtures = String(values['fixtures']);
  const choice = <T extends string>(name: string, allowed: readonly T[]): T | undefined => {
    const value = values[name];
    if (value === undefined) return undefined;
    if (!allowed.includes(value as T)) throw new TypeError(`--${name} must be one of ${allowed.join(', ')}`);
    return value as T;
  };
  let running: Awaited<ReturnType<typeof startEmulator>>;
  try {
    const autoApprove = choice('auto-approve', ['page', 'redirect'] as const);
    const rotation = choice('refresh-rotation', ['immediate', 'on-first-use'] as const);
    const pkce = choice('pkce', ['public', 'dynamic'] as const);
    if (autoApprove) options.autoApprove = autoApprove;
    if (rotation) options.refreshTokenRotation = rotation;
    if (pkce) options.pkce = pkce;
    running = await startEmulator(options);
  } catch (error) {
    if (error instanceof FixtureError || error instanceof TypeError) return failed(error.message);
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') return failed(`port ${port} is in use; pick another with --port`);
    if (code === 'ENOENT') return failed(`fixture file ${values['fixtures']} not found`);
    if (error instanceof SyntaxError)
      return failed(`fixture file ${values['fixtures']} is not valid JSON: ${error.message}`);
    throw error;
  }
  const lines = [
    `GitLab emulator${demo ? ' (demo)' : ''} listening at ${running.url}`,
    '',
    'Users (username / password):',
    ...running.users.map((u) => {
      const notes = [
        u.state !== 'active' ? u.state : '',
        u.admin ? 'admin' : '',
        u.bot ? 'bot' : '',
        u.external ? 'external' : '',
        u.confirmedAt === null ? 'unconfirmed email' : '',
        u.totpSecret ? `2FA: TOTP secret ${u.totpSecret}` : '',
        u.recoveryCodes.length ? `recovery code ${u.recoveryCodes[0]}` : '',
      ].filter(Boolean);
      return `  ${u.username.padEnd(12)} ${u.password}${notes.length ? `   (${notes.join(', ')})` : ''}`;
    }),
    '',
    'OAuth applications:',
    ...running.applications.flatMap((a) => [
      `  ${a.name} (${a.confidential ? 'confidential' : 'public'}${a.trusted ? ', trusted' : ''})`,
      `    client id:     ${a.uid}`,
      `    client secret: ${a.secret}`,
      `    redirect URIs: ${a.redirectUris.join(' ')}`,
      `    scopes:        ${a.scopes.join(' ')}`,
    ]),
    '',
    `Discovery: ${running.url}/.well-known/openid-configuration`,
    `Control:   ${running.url}/-/emulator/`,
    'Press Ctrl+C to stop.',
    '',
  ];
  // Listen for the stop signals before saying we are up, so a prompt SIGTERM still closes cleanly.
  const stopped = new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  process.stdout.write(lines.join('\n'));
  await stopped;
  await running.close();
  return 0;
}

async function secret(args: string[]): Promise<number> {
  if (args.length === 1 && (args[0] === '--help' || args[0] === '-h')) {
    process.stdout.write(SECRET_HELP);
    return 0;
  }
  if (args[0]?.startsWith('-'))
    return fail(`unknown flag ${args[0]} (labgate secret --help lists the flags)`, 'secret');
  if (args.length > 0) return fail('takes no arguments (labgate secret --help)', 'secret');
  const { randomBytes } = await import('node:crypto');
  process.stdout.write(`${randomBytes(32).toString('base64url')}\n`);
  return 0;
}

const commands: Record<string, Command> = {
  emulator: (args) => emulator(args),
  gateway: async (args) => (await import('./gateway.js')).gatewayCommand(args),
  init: async (args) => (await import('./init.js')).initCommand(args),
  doctor: async (args) => (await import('./doctor.js')).doctorCommand(args),
  demo: (args) => emulator(args, true),
  secret,
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(HELP);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v') {
    const { readFileSync } = await import('node:fs');
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    process.stdout.write(`${pkg.version}\n`);
    return 0;
  }
  const command = commands[name];
  if (!command) return fail(`unknown command ${JSON.stringify(name)} (labgate --help lists the commands)`);
  return command(rest);
}

process.exitCode = await main(process.argv.slice(2));
