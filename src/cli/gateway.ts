/**
 * `labgate gateway`: runs the gateway in front of one app, checks its configuration
 * (`labgate gateway check`, oauth2-proxy's `--config-test`), and explains one access decision
 * (`labgate gateway check --user … --url …`). Everything beyond `node:util` loads lazily.
 */
import { parseArgs } from 'node:util';
import type { AccessLevel } from '../core/access.js';
import type { GatewayConfig, GatewaySources } from '../gateway/config.js';
import { argumentError } from './args.js';

/** The text of `labgate gateway --help`. */
export const GATEWAY_HELP = `labgate gateway: GitLab sign-in in front of one app, as a reverse proxy or a forward-auth
endpoint (nginx auth_request, Traefik forwardAuth, Caddy forward_auth). A drop-in for oauth2-proxy.

Usage:
  labgate gateway --upstream URL [options]    Run the gateway
  labgate gateway check [options]             Check the configuration and the store, then exit:
                                              1 on errors, 0 otherwise (oauth2-proxy's --config-test)
  labgate gateway check --user NAME --url PATH [--method GET] [--group PATH:LEVEL]...
                        [--project PATH:LEVEL]... [--email ADDRESS] [options]
                                              Tell whether that user may reach that URL and which rule
                                              decides, from the facts given (exit 0 allowed, 1 refused)

Options:
  --upstream URL                 The app behind the gateway, one http(s) origin (LABGATE_UPSTREAM)
  --listen HOST:PORT             Where to listen (LABGATE_LISTEN; default 127.0.0.1:4180)
  --metrics-address HOST:PORT    Serve Prometheus metrics at /metrics there (LABGATE_METRICS_ADDRESS)
  --route PREFIX=RULE[,RULE]     Who may reach a path prefix, any one rule suffices; repeatable
                                 (LABGATE_ROUTES='/admin=group:acme>=maintainer;/ops=user:alice')
  --skip PREFIX                  A path prefix that needs no sign-in; repeatable (LABGATE_SKIP, a comma list)
  --skip-route METHOD=REGEX      oauth2-proxy's skip_auth_routes: METHOD=REGEX, METHOD!=REGEX, REGEX or
                                 !=REGEX, matched unanchored against the path; repeatable
  --api-route REGEX              Signed-out requests there get 401, never a redirect; repeatable
  --assertion                    Send the upstream a signed identity (X-Labgate-Assertion, a JWT whose
                                 audience is the upstream's origin, 60 s) (LABGATE_ASSERTION=1)
  --websocket-origin ORIGIN      An Origin WebSocket upgrades may come from; repeatable
                                 (default: LABGATE_URL's origin)
  --upstream-timeout DURATION    How long the upstream has to answer (default 30s)
  --config FILE                  An oauth2-proxy config file (TOML)
  -h, --help                     This text

Rules (LABGATE_ALLOW, --route): group:PATH[>=LEVEL], group-exact:PATH[>=LEVEL], project:PATH[>=LEVEL],
  email:@DOMAIN, user:NAME; LEVEL is guest, reporter, developer, maintainer or owner.

Environment: GITLAB_URL, GITLAB_CLIENT_ID, GITLAB_CLIENT_SECRET, GITLAB_SCOPES, LABGATE_URL (the public
  origin; GitLab's redirect URI is LABGATE_URL/oauth2/callback), LABGATE_SECRET, LABGATE_STORE (default
  sqlite:./.labgate/gateway.db), LABGATE_ALLOW, LABGATE_REQUIRE, LABGATE_RECHECK.

oauth2-proxy: its flags (--client-id, --cookie-secret, --gitlab-group, --email-domain, --reverse-proxy, …),
  OAUTH2_PROXY_* variables and config keys are read where labgate has the same option. Every other one is
  named at start-up: an error when ignoring it would change who gets in or where requests go, a warning
  otherwise. Flags win over the environment, which wins over the config file.

Examples:
  # One app behind GitLab sign-in
  export GITLAB_CLIENT_ID=… GITLAB_CLIENT_SECRET=… LABGATE_URL=https://app.example.com
  export LABGATE_SECRET=$(labgate secret) LABGATE_ALLOW=group:acme
  labgate gateway --upstream http://127.0.0.1:3000

  # Per-route rules, a public health check, an API that never redirects
  labgate gateway --upstream http://127.0.0.1:3000 \\
    --route '/admin=group:acme/platform>=maintainer' --skip /healthz --api-route '^/api/'

  # An existing oauth2-proxy config file, as it is
  labgate gateway --config /etc/oauth2-proxy.cfg

  # Forward-auth behind nginx; the identity comes back in X-Auth-Request-* headers
  labgate gateway --upstream http://127.0.0.1:3000 --reverse-proxy --set-xauthrequest \\
    --trusted-proxy-ip 127.0.0.1/32
  #   location /oauth2/ { proxy_pass http://127.0.0.1:4180; }
  #   location / { auth_request /oauth2/auth; error_page 401 = /oauth2/sign_in?rd=$request_uri;
  #                auth_request_set $user $upstream_http_x_auth_request_user; proxy_pass http://app; }

  # Check a configuration, then ask why alice can or cannot open /admin
  labgate gateway check --config /etc/oauth2-proxy.cfg
  labgate gateway check --config /etc/oauth2-proxy.cfg --user alice --url /admin/users \\
    --group acme/platform:developer --email alice@acme.com
`;

const CHECK_FLAGS = {
  user: { type: 'string' },
  url: { type: 'string' },
  method: { type: 'string' },
  group: { type: 'string', multiple: true },
  project: { type: 'string', multiple: true },
  email: { type: 'string' },
} as const;

type Values = Record<string, string | boolean | string[] | undefined>;

const out = (line: string) => process.stdout.write(`${line}\n`);
const err = (line: string) => process.stderr.write(`${line}\n`);

/**
 * Reads the oauth2-proxy config file named by `--config` (TOML), or returns why not in one line.
 */
async function readConfigFile(path: string): Promise<Record<string, unknown> | string> {
  const { readFile } = await import('node:fs/promises');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    return `cannot read the config file ${JSON.stringify(path)} (${(error as NodeJS.ErrnoException).code ?? 'error'})`;
  }
  const { parse } = await import('smol-toml');
  try {
    return parse(text) as Record<string, unknown>;
  } catch (error) {
    return `the config file ${JSON.stringify(path)} is not valid TOML: ${(error as Error).message.split('\n', 1)[0]}`;
  }
}

/**
 * `labgate gateway [check] [options]`: returns the exit code (0 ok, 1 errors found or access refused,
 * 2 bad command line or configuration). See {@link GATEWAY_HELP}.
 *
 * @example
 * ```ts
 * process.exitCode = await gatewayCommand(['check', '--config', 'oauth2-proxy.cfg']);
 * ```
 */
export async function gatewayCommand(args: string[]): Promise<number> {
  const { GATEWAY_FLAGS, OAUTH2_PROXY_BOOLEAN_FLAGS, resolveGatewayConfig } = await import(
    '../gateway/config.js'
  );
  const checking = args[0] === 'check';
  const rest = checking ? args.slice(1) : args;
  const end = rest.indexOf('--');
  // Go's flags read a bare boolean flag as true; ours are strings so that `--flag=false` parses too.
  const normalised = rest.map((arg, i) =>
    (end === -1 || i < end) && arg.startsWith('--') && OAUTH2_PROXY_BOOLEAN_FLAGS.has(arg.slice(2))
      ? `${arg}=true`
      : arg,
  );
  let values: Values;
  try {
    ({ values } = parseArgs({
      args: normalised,
      options: {
        ...GATEWAY_FLAGS,
        help: { type: 'boolean', short: 'h' },
        'config-test': { type: 'boolean' },
        ...(checking ? CHECK_FLAGS : {}),
      },
      strict: true,
      allowPositionals: false,
    }) as { values: Values });
  } catch (error) {
    err(`labgate gateway: ${argumentError(error)} (labgate gateway --help lists the flags)`);
    return 2;
  }
  if (values['help']) {
    process.stdout.write(GATEWAY_HELP);
    return 0;
  }
  const check = checking || values['config-test'] === true;
  let file: Record<string, unknown> | undefined;
  if (typeof values['config'] === 'string') {
    const read = await readConfigFile(values['config']);
    if (typeof read === 'string') {
      if (check) {
        out(`✗ ${read}`);
        return 1;
      }
      err(`labgate gateway: ${read}`);
      return 2;
    }
    file = read;
  }
  const sources: GatewaySources = { flags: values, env: process.env, file };
  const result = resolveGatewayConfig(sources);

  if (check) {
    for (const error of result.ok ? [] : result.errors) out(`✗ ${error}`);
    for (const warning of result.warnings) out(`⚠ ${warning}`);
    if (!result.ok) {
      out(`✗ ${result.errors.length} error(s): the gateway would not start`);
      return 1;
    }
    if (values['user'] !== undefined || values['url'] !== undefined) return explain(result.config, values);
    if (!(await checkStore(result.config.store))) return 1;
    out(
      `✓ the configuration is valid${result.warnings.length ? ` (${result.warnings.length} warning(s))` : ''}`,
    );
    return 0;
  }

  if (!result.ok) {
    for (const error of result.errors) err(`✗ ${error}`);
    for (const warning of result.warnings) err(`⚠ ${warning}`);
    err(`labgate gateway: not started, ${result.errors.length} error(s) in the configuration`);
    return 2;
  }
  return run(result.config, result.warnings);
}

/** Opens `LABGATE_STORE` and reads one key, to show the store is reachable. */
async function checkStore(url: string): Promise<boolean> {
  const { describeStore, openStore } = await import('../stores/index.js');
  try {
    const store = await openStore(url);
    try {
      await store.get('labgate:check');
    } finally {
      await store.close?.();
    }
    out(`✓ the store ${describeStore(url)} is reachable`);
    return true;
  } catch (error) {
    out(`✗ the store ${describeStore(url)}: ${(error as Error).message.replace(/^labgate: /, '')}`);
    return false;
  }
}

/** Runs the gateway until SIGINT or SIGTERM. */
async function run(config: GatewayConfig, warnings: string[]): Promise<number> {
  const { describeStore, openStore } = await import('../stores/index.js');
  const { jsonLogger, startGateway } = await import('../gateway/server.js');
  const logger = jsonLogger((line) => process.stdout.write(line));
  for (const warning of warnings) logger.warn(warning);
  let store: Awaited<ReturnType<typeof openStore>>;
  try {
    store = await openStore(config.store);
  } catch (error) {
    err(
      `labgate gateway: the store ${describeStore(config.store)}: ${(error as Error).message.replace(/^labgate: /, '')}`,
    );
    return error instanceof TypeError ? 2 : 1;
  }
  // Listen for the stop signals before starting, so a prompt SIGTERM still closes cleanly.
  let stop: (signal: string) => void = () => {};
  const stopped = new Promise<string>((resolve) => {
    stop = resolve;
  });
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const forget = () => {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  };
  let running: Awaited<ReturnType<typeof startGateway>>;
  try {
    running = await startGateway(config, { store });
  } catch (error) {
    forget();
    await store.close?.();
    const code = (error as NodeJS.ErrnoException).code;
    const { host, port } = config.listen;
    if (code === 'EADDRINUSE')
      err(`labgate gateway: ${host}:${port} is in use; choose another with --listen`);
    else if (code === 'EACCES') err(`labgate gateway: not allowed to listen on ${host}:${port}`);
    else err(`labgate gateway: ${(error as Error).message.replace(/^labgate: /, '')}`);
    return error instanceof TypeError ? 2 : 1;
  }
  await stopped;
  forget();
  await running.close();
  await store.close?.();
  return 0;
}

/** `PATH:LEVEL` (a level name or number) as a membership. */
async function memberships(
  flag: string,
  entries: readonly string[],
): Promise<{ fullPath: string; accessLevel: number }[] | string> {
  const { accessLevelOf } = await import('../core/access.js');
  const list: { fullPath: string; accessLevel: number }[] = [];
  for (const entry of entries) {
    const colon = entry.lastIndexOf(':');
    const fullPath = entry.slice(0, colon).trim();
    if (colon <= 0 || fullPath === '') {
      return `--${flag} ${JSON.stringify(entry)}: give PATH:LEVEL, such as acme/platform:developer`;
    }
    try {
      list.push({ fullPath, accessLevel: accessLevelOf(entry.slice(colon + 1).trim() as AccessLevel) });
    } catch (error) {
      return `--${flag} ${JSON.stringify(entry)}: ${(error as Error).message.replace(/^labgate: /, '')}`;
    }
  }
  return list;
}

/** `check --user --url`: which rule lets that user through that URL, or why not. */
async function explain(config: GatewayConfig, values: Values): Promise<number> {
  const [{ evaluateAccess, formatRule }, { normaliseTarget }, { compileRules }, { logText }] =
    await Promise.all([
      import('../core/access.js'),
      import('../gateway/paths.js'),
      import('../gateway/rules.js'),
      import('../core/log.js'),
    ]);
  const user = typeof values['user'] === 'string' ? values['user'].trim() : '';
  const rawUrl = typeof values['url'] === 'string' ? values['url'].trim() : '';
  if (user === '' || rawUrl === '') {
    err('labgate gateway: check needs both --user NAME and --url PATH');
    return 2;
  }
  const method = (typeof values['method'] === 'string' ? values['method'] : 'GET').toUpperCase();
  if (!/^[A-Z]+$/.test(method)) {
    err(`labgate gateway: --method ${JSON.stringify(method)} is not an HTTP method`);
    return 2;
  }
  const groups = await memberships('group', (values['group'] as string[] | undefined) ?? []);
  const projects = await memberships('project', (values['project'] as string[] | undefined) ?? []);
  for (const problem of [groups, projects]) {
    if (typeof problem === 'string') {
      err(`labgate gateway: ${problem}`);
      return 2;
    }
  }
  const email = typeof values['email'] === 'string' ? values['email'].trim() : null;
  // A full URL is read for its path and query only: that is what the gateway decides on.
  let target = rawUrl;
  if (/^https?:\/\//i.test(rawUrl)) {
    try {
      const url = new URL(rawUrl);
      target = `${url.pathname}${url.search}`;
    } catch {
      target = '';
    }
  }
  const show = (text: string) => logText(text);
  const normalised = normaliseTarget(target);
  if (normalised === null) {
    out(
      `✗ ${show(rawUrl)}: the gateway refuses this URL (400): not a path, or an encoded / \\ NUL, or a . or .. segment`,
    );
    return 1;
  }
  const path = normalised.path;
  const facts = {
    user: {
      username: user,
      email,
      emailVerified: email !== null,
      state: 'active',
      bot: false,
      external: false,
      twoFactorEnabled: true,
      confirmed: true,
    },
    groups: groups as { fullPath: string; accessLevel: number }[],
    projects: projects as { fullPath: string; accessLevel: number }[],
    now: Date.now(),
    complete: true,
  };
  const listed = (list: { fullPath: string; accessLevel: number }[]) =>
    list.length === 0 ? 'none' : list.map((m) => `${m.fullPath} (${m.accessLevel})`).join(', ');
  out(`${method} ${show(path)} as ${show(user)}`);
  out(
    `  facts: groups ${show(listed(facts.groups))}; projects ${show(listed(facts.projects))}; ` +
      `email ${email === null ? 'none' : `${show(email)} (taken as verified)`}; ` +
      'the account taken as active, human, internal, with two-factor authentication',
  );

  if (path === '/oauth2' || path.startsWith('/oauth2/')) {
    out(`✓ ${show(path)} is one of the gateway's own endpoints: no access rule applies`);
    return 0;
  }
  const none = { routes: [], skipRoutes: [], skipPrefixes: [], apiRoutes: [] };
  if (config.skipAuthPreflight && method === 'OPTIONS') {
    out('✓ no sign-in needed: skip_auth_preflight lets every OPTIONS request through');
    return 0;
  }
  for (const prefix of config.skipPrefixes) {
    if (compileRules({ ...none, skipPrefixes: [prefix] }).skips(method, path)) {
      out(`✓ no sign-in needed: the skip prefix ${prefix} covers it`);
      return 0;
    }
  }
  for (const rule of config.skipRoutes) {
    if (compileRules({ ...none, skipRoutes: [rule] }).skips(method, path)) {
      const text = `${rule.method ?? ''}${rule.negate ? '!=' : rule.method ? '=' : ''}${rule.pattern}`;
      out(`✓ no sign-in needed: the skip rule "${show(text)}" matches`);
      return 0;
    }
  }
  const rules = compileRules(config);
  if (config.skipRoutes.length + config.skipPrefixes.length > 0)
    out('  no skip rule matches: sign-in is needed');
  if (rules.isApi(path) || config.forceJsonErrors) {
    const why = rules.isApi(path) ? 'an API route' : 'force_json_errors';
    out(`  signed out, this request gets 401 (${why}), not a redirect`);
  }

  let allowed = true;
  const step = (title: string, policy: Parameters<typeof evaluateAccess>[0]) => {
    const decision = evaluateAccess(policy, facts);
    const last = decision.reasons.filter((r) => /^(allowed|denied): /.test(r)).at(-1) ?? '';
    out(`${decision.allowed ? '✓' : '✗'} ${title}: ${show(last)}`);
    if (!decision.allowed) {
      allowed = false;
      for (const line of decision.reasons.filter((r) => r !== last && !r.startsWith('requirement '))) {
        out(`    ${show(line)}`);
      }
    }
  };
  const access = config.labgate.access ?? {};
  const appRules = (access.allow ?? []).map((rule) => (typeof rule === 'string' ? rule : formatRule(rule)));
  step(
    `app-wide policy (${appRules.length ? appRules.join(', ') : 'everyone with a GitLab account'})`,
    access,
  );
  if (config.emailDomains !== null) {
    step(`email domains (${config.emailDomains.join(', ')})`, {
      allow: config.emailDomains.map((domain) => `email:@${domain}`),
      require: [],
    });
  }
  const route = rules.routeFor(path);
  if (route) step(`route ${route.prefix} (${route.allow.join(', ')})`, { allow: route.allow, require: [] });
  else if (config.routes.length > 0) out('  no route rule covers this path');
  out(
    allowed
      ? `✓ ${show(user)} may ${method} ${show(path)}`
      : `✗ ${show(user)} is refused ${method} ${show(path)} (403)`,
  );
  return allowed ? 0 : 1;
}
