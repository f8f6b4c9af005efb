/**
 * The gateway's configuration: flags over the environment over oauth2-proxy's config file, labgate's
 * own names and oauth2-proxy's for one option, every supported oauth2-proxy option and what it becomes,
 * every unsupported one named (an error or a warning), and every error of a configuration reported at once.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLabgate, MemoryStore } from '../../src/core/index.js';
import {
  type GatewayConfig,
  type GatewaySources,
  parseGoDuration,
  resolveGatewayConfig,
} from '../../src/gateway/config.js';
import { compileRules } from '../../src/gateway/rules.js';

const SECRET = randomBytes(32).toString('base64url');
const ENV = { GITLAB_CLIENT_ID: 'app-id', LABGATE_URL: 'https://app.example.com', LABGATE_SECRET: SECRET };
const UPSTREAM = { upstream: ['http://127.0.0.1:3000'] };

const dir = mkdtempSync(join(tmpdir(), 'labgate-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function resolve(
  flags: GatewaySources['flags'] = {},
  env: GatewaySources['env'] = {},
  file?: Record<string, unknown>,
) {
  return resolveGatewayConfig({ flags: { ...UPSTREAM, ...flags }, env: { ...ENV, ...env }, file });
}

/** A configuration that must resolve, and its warnings. */
function ok(
  flags: GatewaySources['flags'] = {},
  env: GatewaySources['env'] = {},
  file?: Record<string, unknown>,
) {
  const result = resolve(flags, env, file);
  if (!result.ok) throw new Error(`expected a configuration, got errors:\n${result.errors.join('\n')}`);
  return { config: result.config, warnings: result.warnings };
}

/** A configuration that must fail, and its errors and warnings. */
function failed(
  flags: GatewaySources['flags'] = {},
  env: GatewaySources['env'] = {},
  file?: Record<string, unknown>,
) {
  const result = resolve(flags, env, file);
  if (result.ok) throw new Error('expected errors, got a configuration');
  return { errors: result.errors, warnings: result.warnings };
}

// A config file's upstreams stand alone, without the flag every other case uses.
const fileFlags = (file: Record<string, unknown>) => ('upstreams' in file ? { upstream: undefined } : {});
const fileOk = (file: Record<string, unknown>) => ok(fileFlags(file), {}, file);
const fileFailed = (file: Record<string, unknown>) => failed(fileFlags(file), {}, file);

describe('defaults', () => {
  it('gives the documented defaults from an upstream, a client id, a URL and a secret', () => {
    const { config, warnings } = ok();
    expect(warnings).toEqual([]);
    expect(config.upstream.href).toBe('http://127.0.0.1:3000/');
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 4180 });
    expect(config.metricsAddress).toBeNull();
    expect(config.store).toBe('sqlite:./.labgate/gateway.db');
    expect(config.labgate).toMatchObject({
      clientId: 'app-id',
      url: 'https://app.example.com',
      secret: SECRET,
      prefix: '/oauth2',
      scopes: 'openid profile email',
    });
    expect(config.labgate.access).toBeUndefined();
    expect(config.trustedProxies).toEqual(['127.0.0.1/32', '::1/128']);
    expect(config.websocketOrigins).toEqual(['https://app.example.com']);
    expect(config.upstreamTimeout).toBe(30_000);
    expect(config.shutdownTimeout).toBe(10_000);
    expect(config.assertion).toBeNull();
    expect(config.emailDomains).toBeNull();
    expect(config).toMatchObject({
      routes: [],
      skipRoutes: [],
      skipPrefixes: [],
      apiRoutes: [],
      reverseProxy: false,
      whitelistDomains: [],
      setXAuthRequest: false,
      passAccessToken: false,
      passUserHeaders: true,
      preferEmailToUser: false,
      skipAuthPreflight: false,
      forceJsonErrors: false,
      skipProviderButton: false,
    });
  });

  it('is accepted by the core: the redirect URI is LABGATE_URL/oauth2/callback', () => {
    const { config } = ok({ route: ['/admin=group:acme>=maintainer'] }, { LABGATE_ALLOW: 'group:acme' });
    const labgate = createLabgate({ ...config.labgate, store: new MemoryStore(), logger: false });
    expect(labgate.options.redirectUri).toBe('https://app.example.com/oauth2/callback');
    expect(compileRules(config).routeFor('/admin/x')?.prefix).toBe('/admin');
  });

  it('defaults LABGATE_URL to http://localhost:PORT on loopback, saying so', () => {
    const { config, warnings } = ok({ listen: '127.0.0.1:4999' }, { LABGATE_URL: undefined });
    expect(config.labgate.url).toBe('http://localhost:4999');
    expect(warnings.join('\n')).toMatch(/LABGATE_URL is not set/);
  });

  it('requires LABGATE_URL when listening beyond loopback', () => {
    const { errors } = failed({ listen: '0.0.0.0:4180' }, { LABGATE_URL: undefined });
    expect(errors.join('\n')).toMatch(/LABGATE_URL \(or redirect_url\) is required/);
  });
});

describe('precedence: flags, then the environment, then the config file', () => {
  type Case = [
    string,
    GatewaySources['flags'],
    GatewaySources['env'],
    Record<string, unknown>,
    (c: GatewayConfig) => unknown,
    unknown,
  ];
  const all: Case[] = [
    [
      'listen: all three',
      { listen: '127.0.0.1:5001' },
      { LABGATE_LISTEN: '127.0.0.1:5002' },
      { http_address: '127.0.0.1:5003' },
      (c) => c.listen.port,
      5001,
    ],
    [
      'listen: environment and file',
      {},
      { LABGATE_LISTEN: '127.0.0.1:5002' },
      { http_address: '127.0.0.1:5003' },
      (c) => c.listen.port,
      5002,
    ],
    ['listen: file only', {}, {}, { http_address: '127.0.0.1:5003' }, (c) => c.listen.port, 5003],
    [
      'listen: oauth2-proxy flag over labgate variable',
      { 'http-address': '127.0.0.1:5004' },
      { LABGATE_LISTEN: '127.0.0.1:5002' },
      {},
      (c) => c.listen.port,
      5004,
    ],
    [
      'upstream: flag over variable over file',
      { upstream: ['http://127.0.0.1:1111'] },
      { LABGATE_UPSTREAM: 'http://127.0.0.1:2222' },
      { upstreams: ['http://127.0.0.1:3333'] },
      (c) => c.upstream.port,
      '1111',
    ],
    [
      'upstream: variable over file',
      { upstream: undefined },
      { OAUTH2_PROXY_UPSTREAMS: 'http://127.0.0.1:2222' },
      { upstreams: ['http://127.0.0.1:3333'] },
      (c) => c.upstream.port,
      '2222',
    ],
    [
      'upstream: file',
      { upstream: undefined },
      {},
      { upstreams: ['http://127.0.0.1:3333'] },
      (c) => c.upstream.port,
      '3333',
    ],
    [
      'client id: flag over variable over file',
      { 'client-id': 'from-flag' },
      { GITLAB_CLIENT_ID: 'from-env' },
      { client_id: 'from-file' },
      (c) => c.labgate.clientId,
      'from-flag',
    ],
    [
      'client id: variable over file',
      {},
      { GITLAB_CLIENT_ID: 'from-env' },
      { client_id: 'from-file' },
      (c) => c.labgate.clientId,
      'from-env',
    ],
    [
      'client id: file',
      {},
      { GITLAB_CLIENT_ID: undefined },
      { client_id: 'from-file' },
      (c) => c.labgate.clientId,
      'from-file',
    ],
    [
      'metrics address: variable over file',
      {},
      { LABGATE_METRICS_ADDRESS: '127.0.0.1:9100' },
      { metrics_address: '127.0.0.1:9200' },
      (c) => c.metricsAddress,
      { host: '127.0.0.1', port: 9100 },
    ],
    [
      'upstream timeout: flag over file',
      { 'upstream-timeout': '5s' },
      {},
      { upstream_timeout: '1m' },
      (c) => c.upstreamTimeout,
      5000,
    ],
    [
      'scopes: variable over file',
      {},
      { GITLAB_SCOPES: 'openid email' },
      { scope: 'openid profile' },
      (c) => c.labgate.scopes,
      'openid email',
    ],
    [
      'email domains: flag over file',
      { 'email-domain': ['flag.example'] },
      {},
      { email_domains: ['file.example'] },
      (c) => c.emailDomains,
      ['flag.example'],
    ],
    [
      'skip routes: labgate and oauth2-proxy flags together, over the file',
      { 'skip-route': ['GET=^/a'], 'skip-auth-route': ['GET=^/b'] },
      {},
      { skip_auth_routes: ['GET=^/c'] },
      (c) => c.skipRoutes.map((r) => r.pattern),
      ['^/a', '^/b'],
    ],
    [
      'routes: flag over LABGATE_ROUTES',
      { route: ['/a=user:alice'] },
      { LABGATE_ROUTES: '/b=user:bob' },
      {},
      (c) => c.routes.map((r) => r.prefix),
      ['/a'],
    ],
    [
      'skip prefixes: flag over LABGATE_SKIP',
      { skip: ['/a'] },
      { LABGATE_SKIP: '/b,/c' },
      {},
      (c) => c.skipPrefixes,
      ['/a'],
    ],
    [
      'reverse proxy: flag false over file true',
      { 'reverse-proxy': 'false' },
      {},
      { reverse_proxy: true },
      (c) => c.reverseProxy,
      false,
    ],
  ];
  it.each(all)('%s', (_name, flags, env, file, pick, expected) => {
    expect(pick(ok(flags, env, file).config)).toEqual(expected);
  });

  it("reads labgate's name before oauth2-proxy's in one source, naming both but neither value", () => {
    const other = randomBytes(32).toString('base64url');
    const { config, warnings } = ok(
      {},
      {
        GITLAB_CLIENT_ID: 'labgate-id',
        OAUTH2_PROXY_CLIENT_ID: 'proxy-id',
        OAUTH2_PROXY_COOKIE_SECRET: other,
      },
    );
    expect(config.labgate.clientId).toBe('labgate-id');
    expect(config.labgate.secret).toBe(SECRET);
    expect(warnings).toContain(
      'GITLAB_CLIENT_ID and OAUTH2_PROXY_CLIENT_ID are both set; GITLAB_CLIENT_ID is used',
    );
    expect(warnings).toContain(
      'LABGATE_SECRET and OAUTH2_PROXY_COOKIE_SECRET are both set; LABGATE_SECRET is used',
    );
    expect(warnings.join('\n')).not.toContain(other);
    expect(warnings.join('\n')).not.toContain(SECRET);
  });

  it("reads OAUTH2_PROXY_* variables, lists split on commas, booleans as Go's ParseBool", () => {
    const { config } = ok(
      {},
      {
        GITLAB_CLIENT_ID: undefined,
        OAUTH2_PROXY_CLIENT_ID: 'proxy-id',
        OAUTH2_PROXY_EMAIL_DOMAINS: 'a.example, b.example',
        OAUTH2_PROXY_REVERSE_PROXY: 'T',
        OAUTH2_PROXY_SET_XAUTHREQUEST: '1',
        OAUTH2_PROXY_SKIP_AUTH_ROUTES: 'GET=^/api/status,POST=^/api/saved_objects/_import',
      },
    );
    expect(config.labgate.clientId).toBe('proxy-id');
    expect(config.emailDomains).toEqual(['a.example', 'b.example']);
    expect(config.reverseProxy).toBe(true);
    expect(config.setXAuthRequest).toBe(true);
    expect(config.skipRoutes).toEqual([
      { method: 'GET', negate: false, pattern: '^/api/status' },
      { method: 'POST', negate: false, pattern: '^/api/saved_objects/_import' },
    ]);
  });

  it("splits oauth2-proxy list flags on commas, as pflag's StringSlice does", () => {
    const { config } = ok({ 'gitlab-group': ['acme,acme/platform', 'other'] });
    expect(config.labgate.access?.allow).toEqual([
      { group: 'acme', includeSubgroups: false },
      { group: 'acme/platform', includeSubgroups: false },
      { group: 'other', includeSubgroups: false },
    ]);
  });

  it('reads config-file keys case-insensitively and a string list split on white space, as viper does', () => {
    const { config } = fileOk({ Email_Domains: 'a.example b.example' });
    expect(config.emailDomains).toEqual(['a.example', 'b.example']);
  });
});

describe('oauth2-proxy options that labgate maps', () => {
  type Case = [string, Record<string, unknown>, (c: GatewayConfig) => unknown, unknown];
  const cases: Case[] = [
    ['client_secret', { client_secret: 'shh' }, (c) => c.labgate.clientSecret, 'shh'],
    ['cookie_name', { cookie_name: '_oauth2_proxy' }, (c) => c.labgate.cookieName, '_oauth2_proxy'],
    ['cookie_name with __Host-', { cookie_name: '__Host-gate' }, (c) => c.labgate.cookieName, 'gate'],
    ['cookie_name with __Secure-', { cookie_name: '__Secure-gate' }, (c) => c.labgate.cookieName, 'gate'],
    [
      'upstreams',
      { upstreams: ['http://app.internal:8080/'] },
      (c) => c.upstream.origin,
      'http://app.internal:8080',
    ],
    ['http_address :PORT', { http_address: ':4180' }, (c) => c.listen, { host: '0.0.0.0', port: 4180 }],
    [
      'http_address http://',
      { http_address: 'http://127.0.0.1:4181' },
      (c) => c.listen,
      { host: '127.0.0.1', port: 4181 },
    ],
    ['http_address IPv6', { http_address: '[::1]:4182' }, (c) => c.listen, { host: '::1', port: 4182 }],
    [
      'metrics_address',
      { metrics_address: '127.0.0.1:9100' },
      (c) => c.metricsAddress,
      { host: '127.0.0.1', port: 9100 },
    ],
    [
      'gitlab_groups: membership of the group itself',
      { gitlab_groups: ['acme', 'acme/platform'] },
      (c) => c.labgate.access?.allow,
      [
        { group: 'acme', includeSubgroups: false },
        { group: 'acme/platform', includeSubgroups: false },
      ],
    ],
    [
      'gitlab_projects: default level 20, and 40',
      { gitlab_projects: ['acme/app', 'acme/ops=40'] },
      (c) => c.labgate.access?.allow,
      [
        { project: 'acme/app', minAccessLevel: 'reporter' },
        { project: 'acme/ops', minAccessLevel: 'maintainer' },
      ],
    ],
    [
      'gitlab_projects need read_api',
      { gitlab_projects: ['acme/app=30'] },
      (c) => c.labgate.scopes,
      'openid profile email read_api',
    ],
    [
      'allowed_groups, like gitlab_groups; project: entries of gitlab_projects',
      { allowed_groups: ['acme', 'project:acme/app'], gitlab_projects: ['acme/app'] },
      (c) => c.labgate.access?.allow,
      [
        { project: 'acme/app', minAccessLevel: 'reporter' },
        { group: 'acme', includeSubgroups: false },
      ],
    ],
    ['email_domains *', { email_domains: ['*'] }, (c) => c.emailDomains, null],
    [
      'email_domains',
      { email_domains: ['Acme.com', '*.corp.example', '.dev.example'] },
      (c) => c.emailDomains,
      ['acme.com', '.corp.example', '.dev.example'],
    ],
    [
      'skip_auth_routes: the four forms',
      { skip_auth_routes: ['GET=^/public/', 'post!=^/api/', '^/health$', '!=^/private/', '=^/any'] },
      (c) => c.skipRoutes,
      [
        { method: 'GET', negate: false, pattern: '^/public/' },
        { method: 'POST', negate: true, pattern: '^/api/' },
        { method: null, negate: false, pattern: '^/health$' },
        { method: null, negate: true, pattern: '^/private/' },
        { method: null, negate: false, pattern: '^/any' },
      ],
    ],
    [
      'skip_auth_routes: (?i)',
      { skip_auth_routes: ['GET=(?i)^/Public/'] },
      (c) => c.skipRoutes,
      [{ method: 'GET', negate: false, pattern: '(?i)^/Public/' }],
    ],
    ['api_routes', { api_routes: ['^/api/', '^/graphql$'] }, (c) => c.apiRoutes, ['^/api/', '^/graphql$']],
    [
      'whitelist_domains',
      { whitelist_domains: ['.example.com', 'app.example.net:8080'] },
      (c) => [c.whitelistDomains, c.labgate.redirectDomains],
      [
        ['.example.com', 'app.example.net:8080'],
        ['.example.com', 'app.example.net:8080'],
      ],
    ],
    [
      'trusted_proxy_ips',
      { reverse_proxy: true, trusted_proxy_ips: ['10.0.0.0/8', '192.168.1.1', 'FD00::/8'] },
      (c) => [c.reverseProxy, c.trustedProxies],
      [true, ['10.0.0.0/8', '192.168.1.1/32', 'fd00::/8']],
    ],
    ['set_xauthrequest', { set_xauthrequest: true }, (c) => c.setXAuthRequest, true],
    ['pass_access_token', { pass_access_token: true }, (c) => c.passAccessToken, true],
    ['pass_user_headers', { pass_user_headers: false }, (c) => c.passUserHeaders, false],
    ['prefer_email_to_user', { prefer_email_to_user: true }, (c) => c.preferEmailToUser, true],
    ['skip_auth_preflight', { skip_auth_preflight: true }, (c) => c.skipAuthPreflight, true],
    ['force_json_errors', { force_json_errors: true }, (c) => c.forceJsonErrors, true],
    ['skip_provider_button', { skip_provider_button: true }, (c) => c.skipProviderButton, true],
    [
      'oidc_issuer_url, when GITLAB_URL is unset',
      { oidc_issuer_url: 'https://gitlab.example.com/gitlab/' },
      (c) => c.labgate.gitlabUrl,
      'https://gitlab.example.com/gitlab',
    ],
    ['provider gitlab', { provider: 'gitlab' }, (c) => c.labgate.clientId, 'app-id'],
    ['provider oidc', { provider: 'oidc' }, (c) => c.labgate.clientId, 'app-id'],
    ['scope', { scope: 'openid email' }, (c) => c.labgate.scopes, 'openid email'],
    ['cookie_expire, a Go duration', { cookie_expire: '168h0m0s' }, (c) => c.labgate.sessionMaxAge, 604_800],
    ['cookie_expire', { cookie_expire: '12h' }, (c) => c.labgate.sessionMaxAge, 43_200],
    ['proxy_prefix /oauth2/', { proxy_prefix: '/oauth2/' }, (c) => c.labgate.prefix, '/oauth2'],
    [
      'ping_path and ready_path at their defaults',
      { ping_path: '/ping', ready_path: '/ready' },
      () => true,
      true,
    ],
    [
      'session_store_type redis',
      { session_store_type: 'redis', redis_connection_url: 'redis://127.0.0.1:6379' },
      (c) => c.store,
      'redis://127.0.0.1:6379',
    ],
    ['upstream_timeout', { upstream_timeout: '1m30s' }, (c) => c.upstreamTimeout, 90_000],
    [
      'logging options and an insecure option left off',
      {
        silence_ping_logging: true,
        request_logging: false,
        standard_logging: true,
        auth_logging: false,
        insecure_oidc_allow_unverified_email: false,
        ssl_insecure_skip_verify: false,
      },
      () => true,
      true,
    ],
  ];
  it.each(cases)('%s', (_name, file, pick, expected) => {
    const { config, warnings } = fileOk(file);
    expect(pick(config)).toEqual(expected);
    if (_name.startsWith('logging') || _name.startsWith('ping_path')) expect(warnings).toEqual([]);
  });

  it('reads client_secret_file and cookie_secret_file, without their trailing newline', () => {
    const clientFile = join(dir, 'client-secret');
    const cookieFile = join(dir, 'cookie-secret');
    const cookie = randomBytes(32);
    writeFileSync(clientFile, 'from-a-file\n');
    writeFileSync(cookieFile, `${cookie.toString('base64')}\n`);
    const { config } = ok(
      {},
      { LABGATE_SECRET: undefined },
      { client_secret_file: clientFile, cookie_secret_file: cookieFile },
    );
    expect(config.labgate.clientSecret).toBe('from-a-file');
    expect(config.labgate.secret).toBe(cookie.toString('base64url'));
  });

  it('names a secret file it cannot read, never its content', () => {
    const { errors } = fileFailed({ client_secret_file: join(dir, 'missing') });
    expect(errors.join('\n')).toMatch(
      /client_secret_file \(config file\): cannot read ".*missing" \(ENOENT\)/,
    );
  });

  it('uses a cookie_secret of 32 bytes or more as those bytes (standard or URL-safe base64)', () => {
    const bytes = randomBytes(32);
    for (const encoded of [bytes.toString('base64'), bytes.toString('base64url')]) {
      const { config, warnings } = ok({}, { LABGATE_SECRET: undefined }, { cookie_secret: encoded });
      expect(config.labgate.secret).toBe(bytes.toString('base64url'));
      expect(warnings).toEqual([]);
    }
  });

  it('stretches a shorter cookie_secret with SHA-256, the same way every time, and asks for LABGATE_SECRET', () => {
    const short = randomBytes(16).toString('base64');
    const first = ok({}, { LABGATE_SECRET: undefined }, { cookie_secret: short });
    const second = ok({}, { LABGATE_SECRET: undefined }, { cookie_secret: short });
    const expected = createHash('sha256').update(short).digest('base64url');
    expect(first.config.labgate.secret).toBe(expected);
    expect(second.config.labgate.secret).toBe(expected);
    expect(first.warnings.join('\n')).toMatch(
      /cookie_secret \(config file\) is shorter than 32 bytes.*LABGATE_SECRET/,
    );
    expect(first.warnings.join('\n')).not.toContain(short);
    // The derived secret is one the core accepts.
    createLabgate({ ...first.config.labgate, store: new MemoryStore(), logger: false });
  });

  it('lets GITLAB_URL win over oidc_issuer_url, saying so when they differ', () => {
    const { config, warnings } = ok(
      {},
      { GITLAB_URL: 'https://gitlab.example.com' },
      { oidc_issuer_url: 'https://other.example.com' },
    );
    expect(config.labgate.gitlabUrl).toBe('https://gitlab.example.com');
    expect(warnings.join('\n')).toMatch(/GITLAB_URL and oidc_issuer_url \(config file\) differ/);
  });

  it('takes LABGATE_URL from redirect_url when LABGATE_URL is unset', () => {
    const { config } = ok(
      {},
      { LABGATE_URL: undefined },
      { redirect_url: 'https://gate.example.com/oauth2/callback' },
    );
    expect(config.labgate.url).toBe('https://gate.example.com');
    expect(config.websocketOrigins).toEqual(['https://gate.example.com']);
  });

  it('accepts redirect_url equal to LABGATE_URL/oauth2/callback', () => {
    const { config } = fileOk({ redirect_url: 'https://app.example.com/oauth2/callback' });
    expect(config.labgate.url).toBe('https://app.example.com');
  });

  it('names a cookie_refresh, cookie attributes it does not apply and endpoints it discovers itself', () => {
    const { warnings } = fileOk({
      cookie_refresh: '1h',
      cookie_secure: false,
      cookie_httponly: false,
      cookie_samesite: 'strict',
      cookie_path: '/app',
      login_url: 'https://gitlab.com/oauth/authorize',
      redeem_url: 'https://gitlab.com/oauth/token',
      validate_url: 'https://gitlab.com/api/v4/user',
      profile_url: 'https://gitlab.com/oauth/userinfo',
    });
    const text = warnings.join('\n');
    expect(text).toMatch(
      /cookie_refresh \(config file\) is not supported: labgate refreshes GitLab tokens itself/,
    );
    expect(text).toMatch(/cookie_secure \(config file\) is ignored/);
    expect(text).toMatch(/cookie_httponly \(config file\) is ignored/);
    expect(text).toMatch(/cookie_samesite \(config file\) is ignored/);
    expect(text).toMatch(/cookie_path \(config file\) is ignored/);
    for (const key of ['login_url', 'redeem_url', 'validate_url', 'profile_url']) {
      expect(text).toContain(`${key} (config file) is not supported: ignored: labgate discovers`);
    }
  });

  it('stays quiet for cookie_refresh 0 and oauth2-proxy defaults of unsupported options', () => {
    const { warnings } = fileOk({
      cookie_refresh: '0s',
      pass_host_header: true,
      proxy_websockets: true,
      https_address: ':443',
      skip_auth_strip_headers: true,
      oidc_groups_claim: 'groups',
      approval_prompt: 'force',
      cookie_domains: [],
      cookie_secure: true,
      cookie_samesite: 'lax',
    });
    expect(warnings).toEqual([]);
  });

  it('turns session_store_type = cookie into stateless sessions, with a warning', () => {
    const { config, warnings } = fileOk({ session_store_type: 'cookie' });
    expect(config.labgate.sessionMode).toBe('cookie');
    expect(warnings.join('\n')).toMatch(
      /session_store_type \(config file\) = cookie: sessions are sealed in the cookie/,
    );
  });

  it('prefers LABGATE_STORE over redis_connection_url, saying so', () => {
    const { config, warnings } = ok(
      {},
      { LABGATE_STORE: 'memory:' },
      { session_store_type: 'redis', redis_connection_url: 'redis://127.0.0.1:6379' },
    );
    expect(config.store).toBe('memory:');
    expect(warnings.join('\n')).toMatch(
      /LABGATE_STORE and redis_connection_url \(config file\) are both set/,
    );
  });

  it('adds read_api to chosen scopes when rules need memberships, naming it', () => {
    const { config, warnings } = ok(
      {},
      { GITLAB_SCOPES: 'openid profile email' },
      { gitlab_projects: ['acme/app'] },
    );
    expect(config.labgate.scopes).toBe('openid profile email read_api');
    expect(warnings.join('\n')).toMatch(/GITLAB_SCOPES lacks read_api/);
  });

  it('adds read_api for a route rule with a level, and email for email domains', () => {
    const { config, warnings } = ok(
      { route: ['/admin=group:acme>=maintainer'] },
      {},
      { email_domains: ['acme.com'] },
    );
    expect(config.labgate.scopes).toBe('openid profile email read_api');
    expect(warnings).toEqual([]);
    const chosen = ok({}, { GITLAB_SCOPES: 'openid' }, { email_domains: ['acme.com'] });
    expect(chosen.config.labgate.scopes).toBe('openid email');
    expect(chosen.warnings.join('\n')).toMatch(/GITLAB_SCOPES lacks email/);
  });
});

describe('oauth2-proxy options that labgate refuses', () => {
  const errors: [string, Record<string, unknown>, RegExp][] = [
    [
      'upstreams static://',
      { upstreams: ['static://202'] },
      /upstreams \(config file\): static:\/\/ upstreams are not supported/,
    ],
    [
      'upstreams file://',
      { upstreams: ['file:///var/www/#/'] },
      /upstreams \(config file\): file:\/\/ upstreams are not supported/,
    ],
    [
      'several upstreams',
      { upstreams: ['http://a.internal/', 'http://b.internal/api/'] },
      /upstreams \(config file\): labgate proxies to exactly one upstream, and 2 were given/,
    ],
    ['an upstream with a path', { upstreams: ['http://a.internal/app/'] }, /give the upstream's origin only/],
    [
      'http_address unix://',
      { http_address: 'unix:///run/gate.sock' },
      /http_address \(config file\): unix sockets/,
    ],
    [
      'a bad http_address',
      { http_address: 'localhost' },
      /http_address \(config file\) "localhost" is not HOST:PORT/,
    ],
    [
      'gitlab_projects level 50',
      { gitlab_projects: ['acme/app=50'] },
      /invalid gitlab project access level in "acme\/app=50"/,
    ],
    ['gitlab_projects level name', { gitlab_projects: ['acme/app=developer'] }, /accepts 10, 20, 30 or 40/],
    [
      'a gitlab group that is no path',
      { gitlab_groups: ['acme platform'] },
      /gitlab_groups \(config file\): "acme platform"/,
    ],
    [
      'an allowed_groups project: not in gitlab_projects',
      { allowed_groups: ['project:acme/app'] },
      /names a project that is not in gitlab_projects/,
    ],
    [
      'a skip route whose text before = is no method',
      { skip_auth_routes: ['^/login?next=x'] },
      /the text before "=" is not an HTTP method \(oauth2-proxy would read it as the method "\^\/LOGIN\?NEXT"\)/,
    ],
    [
      'a skip route with != inside',
      { skip_auth_routes: ['GET=^/a!=b'] },
      /has "!=" inside its regular expression/,
    ],
    [
      'an empty skip route',
      { skip_auth_routes: ['GET='] },
      /empty regular expression, which matches every path/,
    ],
    [
      'a skip route that does not compile',
      { skip_auth_routes: ['^/(a'] },
      /skip_auth_routes \(config file\):.*not a valid regular expression/,
    ],
    ['an api route that does not compile', { api_routes: ['^/api/(?z)'] }, /api_routes/],
    [
      'a whitelist entry that is no host',
      { whitelist_domains: ['https://x.example'] },
      /whitelist_domains \(config file\): redirect domain/,
    ],
    [
      'a trusted proxy that is no CIDR',
      { trusted_proxy_ips: ['10.0.0.0/33'] },
      /"10.0.0.0\/33" is not an IP address or CIDR range/,
    ],
    [
      'provider github',
      { provider: 'github' },
      /provider \(config file\) "github" is not supported: labgate signs in with GitLab/,
    ],
    [
      'redirect_url with another path',
      { redirect_url: 'https://app.example.com/auth/callback' },
      /the gateway's callback path is \/oauth2\/callback/,
    ],
    [
      'redirect_url on another origin',
      { redirect_url: 'https://other.example.com/oauth2/callback' },
      /must be https:\/\/app.example.com\/oauth2\/callback \(LABGATE_URL is https:\/\/app.example.com\)/,
    ],
    [
      'cookie_samesite bogus',
      { cookie_samesite: 'sometimes' },
      /cookie_samesite \(config file\) "sometimes" must be one of/,
    ],
    [
      'cookie_name with a dot',
      { cookie_name: 'my.cookie' },
      /cookie_name \(config file\) "my.cookie": a cookie name is/,
    ],
    [
      'cookie_expire a number',
      { cookie_expire: 3600 },
      /cookie_expire \(config file\) must be a positive duration/,
    ],
    [
      'a boolean that is none',
      { set_xauthrequest: 'maybe' },
      /set_xauthrequest \(config file\) must be true or false, not "maybe"/,
    ],
    [
      'a list of numbers',
      { api_routes: [1, 2] },
      /api_routes \(config file\) must be a list of strings, not "1"/,
    ],
    [
      'proxy_prefix',
      { proxy_prefix: '/auth' },
      /proxy_prefix \(config file\) is not supported: the gateway always lives under \/oauth2/,
    ],
    ['ping_path', { ping_path: '/healthz' }, /ping_path \(config file\) is not supported/],
    ['ready_path', { ready_path: '/readyz' }, /ready_path \(config file\) is not supported/],
    [
      'session_store_type redis without a URL',
      { session_store_type: 'redis' },
      /= redis needs redis_connection_url/,
    ],
    ['session_store_type bogus', { session_store_type: 'memcached' }, /must be "cookie" or "redis"/],
    [
      'redis_connection_url not redis',
      { session_store_type: 'redis', redis_connection_url: 'http://x' },
      /must be a redis:\/\//,
    ],
    [
      'insecure_oidc_allow_unverified_email',
      { insecure_oidc_allow_unverified_email: true },
      /insecure_oidc_allow_unverified_email \(config file\) is not supported: refused: labgate never trusts an unverified email/,
    ],
    [
      'ssl_insecure_skip_verify',
      { ssl_insecure_skip_verify: true },
      /ssl_insecure_skip_verify \(config file\).*NODE_EXTRA_CA_CERTS/,
    ],
    [
      'skip_jwt_bearer_tokens',
      { skip_jwt_bearer_tokens: true },
      /skip_jwt_bearer_tokens \(config file\) is not supported/,
    ],
    [
      'extra_jwt_issuers',
      { extra_jwt_issuers: ['https://issuer=aud'] },
      /extra_jwt_issuers \(config file\) is not supported/,
    ],
    [
      'trusted_ips',
      { trusted_ips: ['10.0.0.0/8'] },
      /trusted_ips \(config file\) is not supported: no address bypasses sign-in/,
    ],
    [
      'ping_user_agent',
      { ping_user_agent: 'GoogleHC/1.0' },
      /ping_user_agent \(config file\) is not supported/,
    ],
    [
      'basic_auth_password',
      { basic_auth_password: 'pw' },
      /basic_auth_password \(config file\) is not supported/,
    ],
    ['htpasswd_file', { htpasswd_file: '/etc/htpasswd' }, /htpasswd_file \(config file\) is not supported/],
    [
      'cookie_domains',
      { cookie_domains: ['.example.com'] },
      /cookie_domains \(config file\) is not supported/,
    ],
    ['authenticated_emails_file', { authenticated_emails_file: '/etc/emails' }, /authenticated_emails_file/],
    [
      'proxy_websockets false',
      { proxy_websockets: false },
      /proxy_websockets \(config file\) is not supported/,
    ],
    [
      'tls_cert_file',
      { tls_cert_file: '/etc/tls.crt' },
      /tls_cert_file \(config file\) is not supported: labgate serves plain HTTP/,
    ],
    ['force_https', { force_https: true }, /force_https \(config file\) is not supported/],
    ['an unknown key', { client_idd: 'x' }, /unknown option client_idd in the config file/],
    [
      'a singular list key',
      { upstream: 'http://127.0.0.1:1' },
      /unknown option upstream in the config file \(did you mean upstreams\?\)/,
    ],
  ];
  it.each(errors)('%s', (_name, file, message) => {
    const { errors: found } = fileFailed(file);
    expect(found.join('\n')).toMatch(message);
  });

  const warnings: [string, Record<string, unknown>, RegExp][] = [
    [
      'github_org',
      { github_org: 'acme' },
      /github_org \(config file\) is not supported: an option of another oauth2-proxy provider/,
    ],
    [
      'custom_templates_dir',
      { custom_templates_dir: '/t' },
      /custom_templates_dir \(config file\) is not supported/,
    ],
    [
      'pass_authorization_header',
      { pass_authorization_header: true },
      /pass_authorization_header.*--assertion/,
    ],
    ['provider_ca_files', { provider_ca_files: ['/ca.pem'] }, /provider_ca_files.*NODE_EXTRA_CA_CERTS/],
    ['skip_auth_strip_headers false', { skip_auth_strip_headers: false }, /always strips identity headers/],
    [
      'logging_filename',
      { logging_filename: '/var/log/gate' },
      /logging_filename \(config file\) is not supported: labgate logs JSON/,
    ],
    [
      'skip_auth_regex, deprecated',
      { skip_auth_regex: ['^/public'] },
      /skip_auth_regex \(config file\) is deprecated/,
    ],
    ['an unanchored skip route', { skip_auth_routes: ['GET=/public'] }, /is not anchored with \^/],
    ['reverse_proxy without trusted_proxy_ips', { reverse_proxy: true }, /believed from loopback only/],
    [
      'trusted_proxy_ips without reverse_proxy',
      { trusted_proxy_ips: ['10.0.0.1'] },
      /has no effect without reverse_proxy/,
    ],
    [
      'redis_connection_url with the cookie store',
      { redis_connection_url: 'redis://127.0.0.1' },
      /is ignored: session_store_type is not redis/,
    ],
  ];
  it.each(warnings)('warns for %s', (_name, file, message) => {
    const { warnings: found } = fileOk(file);
    expect(found.join('\n')).toMatch(message);
  });

  it('names unknown OAUTH2_PROXY_* variables, suggesting the plural, and ignores Kubernetes service variables', () => {
    const { errors } = failed(
      {},
      {
        OAUTH2_PROXY_UPSTREAM: 'http://127.0.0.1:1',
        OAUTH2_PROXY_SERVICE_HOST: '10.0.0.1',
        OAUTH2_PROXY_SERVICE_PORT: '4180',
        OAUTH2_PROXY_PORT: 'tcp://10.0.0.1:4180',
        OAUTH2_PROXY_PORT_4180_TCP_ADDR: '10.0.0.1',
      },
    );
    expect(errors).toEqual(['unknown option OAUTH2_PROXY_UPSTREAM (did you mean OAUTH2_PROXY_UPSTREAMS?)']);
  });

  it('names unknown flags', () => {
    expect(failed({ 'no-such-flag': 'x' }).errors).toEqual(['unknown flag --no-such-flag']);
  });
});

describe("labgate's own options and checks", () => {
  it('reads --route and LABGATE_ROUTES, normalised, longest prefix first', () => {
    const { config } = ok({
      route: ['/admin/=group:acme/platform>=maintainer', '/admin/audit=user:alice, user:bob', '/=group:acme'],
    });
    expect(config.routes).toEqual([
      { prefix: '/admin/audit', allow: ['user:alice', 'user:bob'] },
      { prefix: '/admin', allow: ['group:acme/platform>=maintainer'] },
      { prefix: '/', allow: ['group:acme'] },
    ]);
    const env = ok({}, { LABGATE_ROUTES: '/a=user:alice; /b=group:acme>=30' }).config.routes;
    expect(env).toEqual([
      { prefix: '/a', allow: ['user:alice'] },
      { prefix: '/b', allow: ['group:acme>=developer'] },
    ]);
  });

  it('reads --skip and LABGATE_SKIP', () => {
    expect(ok({ skip: ['/healthz', '/public/'] }).config.skipPrefixes).toEqual(['/healthz', '/public']);
    expect(ok({}, { LABGATE_SKIP: '/healthz, /metrics' }).config.skipPrefixes).toEqual([
      '/healthz',
      '/metrics',
    ]);
  });

  it('puts LABGATE_ALLOW, gitlab_groups and gitlab_projects in one allow list, LABGATE_REQUIRE in require', () => {
    const { config } = ok(
      {},
      { LABGATE_ALLOW: 'user:alice', LABGATE_REQUIRE: 'active,2fa' },
      { gitlab_groups: ['acme'], gitlab_projects: ['acme/app=30'] },
    );
    expect(config.labgate.access).toEqual({
      allow: [
        { user: 'alice' },
        { project: 'acme/app', minAccessLevel: 'developer' },
        { group: 'acme', includeSubgroups: false },
      ],
      require: ['active', '2fa'],
    });
    expect(config.labgate.scopes).toBe('openid profile email read_api');
  });

  it('adds read_user for the 2fa requirement when no API scope is there', () => {
    expect(ok({}, { LABGATE_REQUIRE: '2fa' }).config.labgate.scopes).toBe('openid profile email read_user');
  });

  it('turns --assertion and LABGATE_ASSERTION=1 into the upstream-bound assertion', () => {
    const expected = { header: 'X-Labgate-Assertion', audience: 'http://127.0.0.1:3000', ttl: 60 };
    expect(ok({ assertion: true }).config.assertion).toEqual(expected);
    expect(ok({}, { LABGATE_ASSERTION: '1' }).config.assertion).toEqual(expected);
    expect(ok({}, { LABGATE_ASSERTION: '0' }).config.assertion).toBeNull();
  });

  it('reads --websocket-origin as origins', () => {
    const { config } = ok({ 'websocket-origin': ['https://app.example.com/', 'https://Admin.example.com'] });
    expect(config.websocketOrigins).toEqual(['https://app.example.com', 'https://admin.example.com']);
  });

  it('reads LABGATE_RECHECK and LABGATE_WEBHOOK_SECRET through the core', () => {
    const { config } = ok({}, { LABGATE_RECHECK: '2m', LABGATE_WEBHOOK_SECRET: 'hook' });
    expect(config.labgate.recheckInterval).toBe(120);
    expect(config.labgate.webhookSecret).toBe('hook');
  });

  it('reports every error of a configuration at once', () => {
    const result = resolveGatewayConfig({
      flags: {
        listen: 'nowhere',
        route: [
          '/ops=group:acme>=boss',
          '/admin=user:alice',
          '/admin/=user:bob',
          '/oauth2/x=user:bob',
          'admin',
        ],
        skip: ['/'],
        'skip-route': ['GET=^/(a'],
        'websocket-origin': ['app.example.com'],
        'upstream-timeout': 'soon',
      },
      env: {
        LABGATE_URL: 'https://app.example.com/app',
        LABGATE_SECRET: 'short',
        LABGATE_ALLOW: 'team:acme',
        LABGATE_RECHECK: 'often',
      },
      file: { skip_jwt_bearer_tokens: true, upstreamz: 'x' },
    });
    expect(result.ok).toBe(false);
    const errors = result.ok ? [] : result.errors;
    const expected = [
      /^unknown option upstreamz in the config file$/,
      /^skip_jwt_bearer_tokens \(config file\) is not supported/,
      /^--listen "nowhere" is not HOST:PORT/,
      /^--upstream is required/,
      /^LABGATE_URL "https:\/\/app.example.com\/app" is not the gateway's public URL/,
      /^GITLAB_CLIENT_ID is required/,
      /^LABGATE_SECRET: secret #1 is not base64url/,
      /^LABGATE_ALLOW: "team:acme" has an unknown kind/,
      /^LABGATE_RECHECK "often" is not a duration/,
      /^--route: "group:acme>=boss": unknown access level "boss"/,
      /^--route: the prefix \/admin is given twice$/,
      /^--route: "\/oauth2\/x" is under \/oauth2/,
      /^--route: "admin" is not PREFIX=RULE/,
      /^--skip: "\/" would skip sign-in for every path$/,
      /^--skip-route:.*not a valid regular expression/,
      /^--websocket-origin "app.example.com" is not a WebSocket origin/,
      /^--upstream-timeout must be a positive duration/,
    ];
    for (const pattern of expected)
      expect(
        errors.some((e) => pattern.test(e)),
        String(pattern),
      ).toBe(true);
    expect(errors).toHaveLength(expected.length);
  });

  it('refuses LABGATE_STORE with an unknown scheme without showing it', () => {
    const { errors } = failed({}, { LABGATE_STORE: 'mysql://root:hunter2@db/x' });
    expect(errors).toEqual(['LABGATE_STORE must be one of sqlite:PATH, postgres://…, redis://…, memory:']);
  });

  it('refuses an http GitLab beyond loopback through the core', () => {
    const { errors } = failed({}, { GITLAB_URL: 'http://gitlab.example.com' });
    expect(errors.join('\n')).toMatch(/uses http:\/\/; use https:\/\//);
  });
});

describe('parseGoDuration', () => {
  it.each([
    ['168h0m0s', 604_800],
    ['1h30m', 5400],
    ['1.5h', 5400],
    ['500ms', 0.5],
    ['0', 0],
    ['30s', 30],
  ])('%s is %d s', (text, seconds) => {
    expect(parseGoDuration(text)).toBeCloseTo(seconds);
  });
  it.each(['', '30', 'h', '1d', '1h 30m', '-1s'])('refuses %j', (text) => {
    expect(parseGoDuration(text)).toBeNull();
  });
});
