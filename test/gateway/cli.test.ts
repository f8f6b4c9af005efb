/**
 * `labgate gateway` on the command line, called in-process: `--help`, flags it does not know, `check`
 * (oauth2-proxy's `--config-test`: every error and warning on its own line, the store opened), an
 * oauth2-proxy TOML config file, and `check --user … --url …` explaining which rule decides.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { GATEWAY_HELP, gatewayCommand } from '../../src/cli/gateway.js';

const SECRET = randomBytes(32).toString('base64url');
const ENV = {
  GITLAB_CLIENT_ID: 'app-id',
  LABGATE_URL: 'https://app.example.com',
  LABGATE_SECRET: SECRET,
  LABGATE_STORE: 'memory:',
};
const UPSTREAM = ['--upstream', 'http://127.0.0.1:3000'];

const dir = mkdtempSync(join(tmpdir(), 'labgate-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => {
  vi.restoreAllMocks();
  vi.unstubAllEnvs();
});

/** Runs the command with labgate's variables replaced by `env`; returns its exit code and output. */
async function gateway(args: string[], env: Record<string, string | undefined> = ENV) {
  for (const name of Object.keys(process.env)) {
    if (/^(GITLAB_|LABGATE_|OAUTH2_PROXY_)/.test(name)) vi.stubEnv(name, undefined);
  }
  for (const [name, value] of Object.entries(env)) vi.stubEnv(name, value);
  let stdout = '';
  let stderr = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  });
  const code = await gatewayCommand(args);
  vi.restoreAllMocks();
  return { code, stdout, stderr, lines: stdout.split('\n').filter(Boolean) };
}

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe('labgate gateway --help', () => {
  it('prints the usage with examples and exits 0', async () => {
    const { code, stdout, stderr } = await gateway(['--help']);
    expect(code).toBe(0);
    expect(stderr).toBe('');
    expect(stdout).toBe(GATEWAY_HELP);
    for (const example of [
      'labgate gateway --upstream http://127.0.0.1:3000\n',
      "--route '/admin=group:acme/platform>=maintainer'",
      'labgate gateway --config /etc/oauth2-proxy.cfg\n',
      '--reverse-proxy --set-xauthrequest',
      'labgate gateway check --config /etc/oauth2-proxy.cfg\n',
      '--user alice --url /admin/users',
    ]) {
      expect(stdout).toContain(example);
    }
    expect((await gateway(['check', '-h'])).stdout).toBe(GATEWAY_HELP);
  });
});

describe('flags it does not know', () => {
  it.each([
    [['--nope'], 'labgate gateway: unknown flag --nope (labgate gateway --help lists the flags)\n'],
    [['check', '--user'], 'labgate gateway: --user needs a value (labgate gateway --help lists the flags)\n'],
    [['serve'], 'labgate gateway: unexpected argument serve (labgate gateway --help lists the flags)\n'],
    [['--user', 'alice'], 'labgate gateway: unknown flag --user (labgate gateway --help lists the flags)\n'],
  ])('%j: one line, exit 2', async (args, message) => {
    const { code, stdout, stderr } = await gateway(args);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toBe(message);
  });
});

describe('labgate gateway check', () => {
  it('checks the configuration and opens the store: exit 0', async () => {
    const { code, lines } = await gateway(['check', ...UPSTREAM]);
    expect(lines).toEqual(['✓ the store memory: is reachable', '✓ the configuration is valid']);
    expect(code).toBe(0);
  });

  it("answers oauth2-proxy's --config-test the same way", async () => {
    const { code, lines } = await gateway([...UPSTREAM, '--config-test']);
    expect(lines.at(-1)).toBe('✓ the configuration is valid');
    expect(code).toBe(0);
  });

  it('prints each error and warning on its own line and exits 1', async () => {
    const { code, lines } = await gateway(
      ['check', '--upstream', 'static://202', '--cookie-domain', '.example.com', '--reverse-proxy'],
      { ...ENV, GITLAB_CLIENT_ID: undefined, OAUTH2_PROXY_GITHUB_ORG: 'acme' },
    );
    expect(code).toBe(1);
    expect(lines).toEqual([
      "✗ --cookie-domain is not supported: labgate's session cookie is host-only (__Host- on https): run one gateway per host",
      "✗ --upstream: static:// upstreams are not supported; give the app's http(s) URL (in forward-auth mode only /oauth2/ reaches the gateway)",
      '✗ GITLAB_CLIENT_ID is required (or client_id): the Application ID of the OAuth application in GitLab',
      '⚠ OAUTH2_PROXY_GITHUB_ORG is not supported: an option of another oauth2-proxy provider; labgate signs in with GitLab',
      expect.stringMatching(/^⚠ reverse_proxy is on and trusted_proxy_ips is not set/),
      '✗ 3 error(s): the gateway would not start',
    ]);
  });

  it('reads a bare oauth2-proxy boolean flag as true and --flag=false as false', async () => {
    const on = await gateway(['check', ...UPSTREAM, '--reverse-proxy', '--trusted-proxy-ip', '10.0.0.0/8']);
    expect(on.lines).toEqual(['✓ the store memory: is reachable', '✓ the configuration is valid']);
    const off = await gateway([
      'check',
      ...UPSTREAM,
      '--reverse-proxy=false',
      '--trusted-proxy-ip',
      '10.0.0.0/8',
    ]);
    expect(off.lines[0]).toBe('⚠ --trusted-proxy-ip has no effect without reverse_proxy (--reverse-proxy)');
  });

  it('exits 1 when the store cannot be reached, naming it without its password', async () => {
    const closed = await new Promise<Server>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => resolve(server));
    });
    const port = (closed.address() as { port: number }).port;
    await new Promise((resolve) => closed.close(resolve));
    const { code, lines } = await gateway(['check', ...UPSTREAM], {
      ...ENV,
      LABGATE_STORE: `redis://:hunter2@127.0.0.1:${port}`,
    });
    expect(code).toBe(1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(`^✗ the store redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port}\\S*: Redis is not reachable`),
    );
    expect(lines[0]).not.toContain('hunter2');
  });
});

/** oauth2-proxy's own example configuration (contrib/oauth2-proxy.cfg.example), filled in for GitLab. */
const PROXY_CONFIG = `## OAuth2 Proxy Config File
## <addr>:<port> to listen on for HTTP/HTTPS clients
http_address = "127.0.0.1:4180"

## the OAuth Redirect URL.
redirect_url = "https://internalapp.yourcompany.com/oauth2/callback"

## the http url(s) of the upstream endpoint. If multiple, routing is based on path
upstreams = [
    "http://127.0.0.1:8080/"
]

## pass HTTP Basic Auth, X-Forwarded-User and X-Forwarded-Email information to upstream
pass_basic_auth = true
pass_user_headers = true
## pass the request Host Header to upstream
pass_host_header = true

## Email Domains to allow authentication for
email_domains = [
    "yourcompany.com"
]

## The OAuth Client ID, Secret
client_id = "123456"
client_secret = "s3cr3t"
provider = "gitlab"
oidc_issuer_url = "https://gitlab.com"
gitlab_groups = ["yourcompany/platform"]

## bypass authentication for requests that match the method & path.
skip_auth_routes = [
  "GET=^/probe",
  "^/metrics"
]

## mark paths as API routes to get HTTP Status code 401 instead of redirect to login page
api_routes = [
  "^/api"
]

## Cookie Settings
cookie_name = "_oauth2_proxy"
cookie_secret = "${randomBytes(32).toString('base64')}"
cookie_expire = "168h"
cookie_secure = true
cookie_httponly = true
`;

describe('an oauth2-proxy config file', () => {
  const proxyEnv = { LABGATE_STORE: 'memory:' };

  it('checks as valid, its values mapped', async () => {
    const path = file('oauth2-proxy.cfg', PROXY_CONFIG);
    const { code, lines } = await gateway(['check', '--config', path], proxyEnv);
    expect(lines).toEqual(['✓ the store memory: is reachable', '✓ the configuration is valid']);
    expect(code).toBe(0);
  });

  it('decides with its rules: group, email domain, skip and API routes', async () => {
    const path = file('oauth2-proxy.cfg', PROXY_CONFIG);
    const member = await gateway(
      [
        'check',
        '--config',
        path,
        '--user',
        'ann',
        '--url',
        '/reports',
        '--group',
        'yourcompany/platform:guest',
        '--email',
        'ann@yourcompany.com',
      ],
      proxyEnv,
    );
    expect(member.lines).toContain(
      '✓ app-wide policy (group-exact:yourcompany/platform): allowed: member of yourcompany/platform with guest (≥ guest)',
    );
    expect(member.lines).toContain(
      '✓ email domains (yourcompany.com): allowed: verified email in yourcompany.com',
    );
    expect(member.lines.at(-1)).toBe('✓ ann may GET /reports');
    expect(member.code).toBe(0);

    // oauth2-proxy's GitLab groups are memberships of the group itself, not of a subgroup only.
    const sub = await gateway(
      [
        'check',
        '--config',
        path,
        '--user',
        'sam',
        '--url',
        '/',
        '--group',
        'yourcompany/platform/infra:owner',
        '--email',
        'sam@yourcompany.com',
      ],
      proxyEnv,
    );
    expect(sub.lines.at(-1)).toBe('✗ sam is refused GET / (403)');
    expect(sub.code).toBe(1);

    const outsider = await gateway(
      [
        'check',
        '--config',
        path,
        '--user',
        'eve',
        '--url',
        '/api/items',
        '--group',
        'yourcompany/platform:developer',
        '--email',
        'eve@elsewhere.com',
      ],
      proxyEnv,
    );
    expect(outsider.lines).toContain('  signed out, this request gets 401 (an API route), not a redirect');
    expect(outsider.lines).toContain('✗ email domains (yourcompany.com): denied: no rule matched');
    expect(outsider.lines).toContain('    rule email:@yourcompany.com: no match (email in another domain)');
    expect(outsider.lines).not.toContain('  no route rule covers this path');
    expect(outsider.code).toBe(1);

    const probe = await gateway(
      ['check', '--config', path, '--user', 'x', '--url', '/probe?full=1'],
      proxyEnv,
    );
    expect(probe.lines.at(-1)).toBe('✓ no sign-in needed: the skip rule "GET=^/probe" matches');
    expect(probe.code).toBe(0);
    const post = await gateway(
      ['check', '--config', path, '--user', 'x', '--url', '/probe', '--method', 'post'],
      proxyEnv,
    );
    expect(post.lines.at(-1)).toBe('✗ x is refused POST /probe (403)');
  });

  it('lets flags and the environment win over the file', async () => {
    const path = file('oauth2-proxy.cfg', PROXY_CONFIG);
    const { code, lines } = await gateway(
      [
        'check',
        '--config',
        path,
        '--upstream',
        'https://flag.example',
        '--email-domain',
        '*',
        '--user',
        'eve',
        '--url',
        '/',
      ],
      { ...proxyEnv, LABGATE_ALLOW: 'user:eve' },
    );
    expect(lines).toContain(
      '✓ app-wide policy (user:eve, group-exact:yourcompany/platform): allowed: username eve',
    );
    expect(lines.some((line) => line.startsWith('✓ email domains'))).toBe(false);
    expect(code).toBe(0);
  });

  it('names every unsupported and unknown key of the file', async () => {
    const path = file(
      'bad.cfg',
      `${PROXY_CONFIG}\nskip_jwt_bearer_tokens = true\nhtpasswd_file = "/etc/htpasswd"\ncustom_templates_dir = "/t"\nclient_idd = "x"\n`,
    );
    const { code, lines } = await gateway(['check', '--config', path], proxyEnv);
    expect(lines).toEqual([
      '✗ unknown option client_idd in the config file',
      '✗ skip_jwt_bearer_tokens (config file) is not supported: labgate does not accept bearer tokens in place of a session',
      '✗ htpasswd_file (config file) is not supported: labgate signs in with GitLab only',
      "⚠ custom_templates_dir (config file) is not supported: labgate's pages are not customisable",
      '✗ 3 error(s): the gateway would not start',
    ]);
    expect(code).toBe(1);
  });

  it('reports a file that is missing or not TOML in one line', async () => {
    const missing = await gateway(['check', '--config', join(dir, 'nope.cfg')], proxyEnv);
    expect(missing.lines).toEqual([
      expect.stringMatching(/^✗ cannot read the config file ".*nope\.cfg" \(ENOENT\)$/),
    ]);
    expect(missing.code).toBe(1);
    const broken = await gateway(['check', '--config', file('broken.cfg', 'upstreams = [\n')], proxyEnv);
    expect(broken.lines).toEqual([
      expect.stringMatching(/^✗ the config file ".*broken\.cfg" is not valid TOML: /),
    ]);
    expect(broken.code).toBe(1);
    const run = await gateway(['--config', join(dir, 'nope.cfg')], proxyEnv);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^labgate gateway: cannot read the config file/);
  });
});

describe('labgate gateway check --user --url', () => {
  const rules = [
    ...UPSTREAM,
    '--route',
    '/admin=group:acme/platform>=maintainer',
    '--skip',
    '/healthz',
    '--skip-route',
    'GET=^/public/',
  ];
  const env = { ...ENV, LABGATE_ALLOW: 'group:acme' };
  const ask = (...args: string[]) => gateway(['check', ...rules, ...args], env);

  it('tells which route rule lets a user through', async () => {
    const { code, lines } = await ask(
      '--user',
      'alice',
      '--url',
      '/admin/users',
      '--group',
      'acme/platform:maintainer',
    );
    expect(lines).toEqual([
      'GET /admin/users as alice',
      '  facts: groups acme/platform (40); projects none; email none; the account taken as active, human, internal, with two-factor authentication',
      '  no skip rule matches: sign-in is needed',
      '✓ app-wide policy (group:acme): allowed: member of acme/platform, a subgroup of acme, with maintainer (≥ guest)',
      '✓ route /admin (group:acme/platform>=maintainer): allowed: member of acme/platform with maintainer (≥ maintainer)',
      '✓ alice may GET /admin/users',
    ]);
    expect(code).toBe(0);
  });

  it('tells why the route rule refuses a user, and answers 1', async () => {
    const { code, lines } = await ask(
      '--user',
      'bob',
      '--url',
      'https://app.example.com/admin?tab=1',
      '--group',
      'acme/platform:30',
    );
    expect(lines.slice(-3)).toEqual([
      '✗ route /admin (group:acme/platform>=maintainer): denied: no rule matched',
      '    rule group:acme/platform>=maintainer: no match (highest level developer, below maintainer)',
      '✗ bob is refused GET /admin (403)',
    ]);
    expect(code).toBe(1);
  });

  it('tells when the app-wide policy refuses, and when no route rule applies', async () => {
    const { code, lines } = await ask('--user', 'dave', '--url', '/docs', '--group', 'other:owner');
    expect(lines).toContain('✗ app-wide policy (group:acme): denied: no rule matched');
    expect(lines).toContain('    rule group:acme: no match (no membership)');
    expect(lines).toContain('  no route rule covers this path');
    expect(lines.at(-1)).toBe('✗ dave is refused GET /docs (403)');
    expect(code).toBe(1);
  });

  it('names the skip rule or prefix that needs no sign-in, for its method only', async () => {
    const skipped = await ask('--user', 'carol', '--url', '/public/logo.png');
    expect(skipped.lines.at(-1)).toBe('✓ no sign-in needed: the skip rule "GET=^/public/" matches');
    expect(skipped.code).toBe(0);
    const posted = await ask('--user', 'carol', '--url', '/public/logo.png', '--method', 'POST');
    expect(posted.lines.at(-1)).toBe('✗ carol is refused POST /public/logo.png (403)');
    const health = await ask('--user', 'carol', '--url', '/healthz/live');
    expect(health.lines.at(-1)).toBe('✓ no sign-in needed: the skip prefix /healthz covers it');
  });

  it("decides on the gateway's one normalised path", async () => {
    const collapsed = await ask('--user', 'bob', '--url', '//admin//users', '--group', 'acme:developer');
    expect(collapsed.lines[0]).toBe('GET /admin/users as bob');
    expect(collapsed.lines.at(-1)).toBe('✗ bob is refused GET /admin/users (403)');
    const dots = await ask('--user', 'bob', '--url', '/public/%2e%2e/admin');
    expect(dots.lines).toEqual([
      expect.stringMatching(/^✗ \/public\/%2e%2e\/admin: the gateway refuses this URL \(400\)/),
    ]);
    expect(dots.code).toBe(1);
  });

  it('refuses facts it cannot read, exit 2', async () => {
    const noLevel = await ask('--user', 'bob', '--url', '/', '--group', 'acme');
    expect(noLevel.code).toBe(2);
    expect(noLevel.stderr).toBe(
      'labgate gateway: --group "acme": give PATH:LEVEL, such as acme/platform:developer\n',
    );
    const badLevel = await ask('--user', 'bob', '--url', '/', '--project', 'acme/app:boss');
    expect(badLevel.code).toBe(2);
    expect(badLevel.stderr).toMatch(
      /^labgate gateway: --project "acme\/app:boss": unknown access level "boss"/,
    );
    const noUrl = await ask('--user', 'bob');
    expect(noUrl.code).toBe(2);
    expect(noUrl.stderr).toBe('labgate gateway: check needs both --user NAME and --url PATH\n');
  });
});

describe('running the gateway', () => {
  it('refuses to start on a bad configuration: errors on stderr, exit 2', async () => {
    const { code, stdout, stderr } = await gateway(['--upstream', 'file:///srv'], {
      ...ENV,
      LABGATE_SECRET: undefined,
    });
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr.split('\n').filter(Boolean)).toEqual([
      '✗ --upstream: file:// upstreams are not supported; serve the files from an http(s) app',
      expect.stringMatching(/^✗ LABGATE_SECRET is required/),
      'labgate gateway: not started, 2 error(s) in the configuration',
    ]);
  });

  it('says so when its address is taken, exit 1', async () => {
    const taken = await new Promise<Server>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => resolve(server));
    });
    const port = (taken.address() as { port: number }).port;
    try {
      const { code, stderr } = await gateway([...UPSTREAM, '--listen', `127.0.0.1:${port}`]);
      expect(stderr).toBe(`labgate gateway: 127.0.0.1:${port} is in use; choose another with --listen\n`);
      expect(code).toBe(1);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
