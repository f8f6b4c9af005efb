#!/usr/bin/env node
/**
 * The `labgate` command line: `labgate emulator`, `labgate demo`, `labgate gateway`, `labgate secret`.
 * Each command loads its code lazily, so `labgate --help` stays instant.
 */
import { parseArgs } from 'node:util';

const HELP = `labgate: Sign in with GitLab, GitLab-based access control, and a GitLab emulator.

Usage:
  labgate emulator [options]   Run a GitLab emulator (OAuth, OIDC, API v4) on loopback
  labgate demo                 Run the emulator with the demo fixtures (npm start runs the full demo)
  labgate gateway [options]    GitLab sign-in and access rules in front of any app (an oauth2-proxy
                               drop-in); labgate gateway --help for its options
  labgate gateway check        Check a gateway configuration (exit 1 on errors); --user explains a decision
  labgate secret               Print a new LABGATE_SECRET (32 random bytes, base64url)
  labgate --version

Emulator options:
  --port <n>                 Port to listen on (default 3999; 0 picks a free one)
  --host <addr>              Interface to listen on (default 127.0.0.1)
  --base-path <path>         Serve under a relative URL root, e.g. /gitlab
  --fixtures <file.json>     Users, groups, projects, memberships, shares, applications
                             (default: the demo fixtures that ship with labgate)
  --auto-approve <mode>      page (GitLab's 200 "Redirecting" page, default) or redirect (302)
  --refresh-rotation <mode>  immediate (current GitLab, default) or on-first-use (older GitLab)
  --pkce <mode>              public (PKCE required for public apps, default) or dynamic
`;

type Command = (args: string[]) => Promise<number>;

function fail(message: string): number {
  process.stderr.write(`labgate: ${message}\n`);
  return 2;
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
    }));
  } catch (error) {
    return fail(`${(error as Error).message}\n\n${HELP}`);
  }
  if (values['help']) {
    process.stdout.write(HELP);
    return 0;
  }
  const port = Number(values['port'] ?? process.env['PORT'] ?? 3999);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    return fail(`--port ${values['port']} is not a port number`);
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
    if (error instanceof FixtureError || error instanceof TypeError) return fail(error.message);
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') return fail(`port ${port} is in use; pick another with --port`);
    if (code === 'ENOENT') return fail(`fixture file ${values['fixtures']} not found`);
    if (error instanceof SyntaxError)
      return fail(`fixture file ${values['fixtures']} is not valid JSON: ${error.message}`);
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
  if (args.length > 0) return fail('labgate secret takes no arguments');
  const { randomBytes } = await import('node:crypto');
  process.stdout.write(`${randomBytes(32).toString('base64url')}\n`);
  return 0;
}

const commands: Record<string, Command> = {
  emulator: (args) => emulator(args),
  gateway: async (args) => (await import('./gateway.js')).gatewayCommand(args),
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
  if (!command) return fail(`unknown command ${JSON.stringify(name)}\n\n${HELP}`);
  return command(rest);
}

process.exitCode = await main(process.argv.slice(2));
