/**
 * Apache httpd for bench/gateway.mjs: a minimal configuration of its own (no /etc/apache2), written
 * into a temporary folder, for one process in the foreground (`apache2 -X`, the event MPM, so one
 * process holds all the work and /proc/PID tells its CPU), loopback only, no access log. Either plain
 * `mod_proxy` to the upstream, or the same behind mod_auth_openidc (`Require valid-user` on `/`).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Debian's apache2 binary and the folder of its modules (`apt-get install -y apache2`). */
export const APACHE = '/usr/sbin/apache2';
export const MODULES = '/usr/lib/apache2/modules';

const BASE_MODULES = ['mpm_event', 'authn_core', 'authz_core', 'authz_user', 'proxy', 'proxy_http'];

/** What is missing to run Apache (with mod_auth_openidc when `oidc`), or null. */
export function apacheMissing(oidc) {
  if (!existsSync(APACHE)) return `${APACHE} is not installed: apt-get install -y apache2`;
  for (const name of [...BASE_MODULES, ...(oidc ? ['auth_openidc'] : [])])
    if (!existsSync(join(MODULES, `mod_${name}.so`)))
      return `${join(MODULES, `mod_${name}.so`)} is missing${name === 'auth_openidc' ? ': apt-get install -y libapache2-mod-auth-openidc' : ''}`;
  return null;
}

/**
 * The identity to start Apache with (`spawn`'s `uid` and `gid`): www-data's when this runs as root, for
 * Apache will not serve as root, and one that switches to `User` after starting cannot be driven by
 * `callgrind_control` (valgrind made its control pipes while still root); none otherwise.
 */
export function apacheIdentity() {
  if (process.getuid?.() !== 0) return {};
  const id = (flag) => Number(spawnSync('id', [flag, 'www-data'], { encoding: 'utf8' }).stdout);
  const uid = id('-u');
  const gid = id('-g');
  if (!Number.isInteger(uid) || uid <= 0 || !Number.isInteger(gid))
    throw new Error('running as root, and there is no www-data user to run Apache as');
  return { uid, gid };
}

/**
 * Writes `DIR/NAME.conf` and returns the command that runs it and the error log it writes
 * (`DIR/NAME.log`; a pipe from Node is a socket, which Apache cannot open as `/dev/stderr`). DIR must
 * be writable by the identity of {@link apacheIdentity}. Apache on `127.0.0.1:port` proxying
 * `/` to `upstream` over pooled keep-alive connections. With `oidc` (`{ discoveryUrl, clientId,
 * clientSecret, passphrase }`), mod_auth_openidc guards `/`, its redirect URI
 * `http://127.0.0.1:<port>/oauth2/callback`, its sessions in its default server-side cache (shm).
 */
export function apacheServer({ dir, name, port, upstream, oidc = null }) {
  const modules = [...BASE_MODULES, ...(oidc ? ['auth_openidc'] : [])].map(
    (m) => `LoadModule ${m}_module ${join(MODULES, `mod_${m}.so`)}`,
  );
  const log = join(dir, `${name}.log`);
  const quote = (s) => `"${String(s).replace(/["\\]/g, '\\$&')}"`;
  const lines = [
    `ServerRoot ${quote(dir)}`,
    `DefaultRuntimeDir ${quote(dir)}`,
    `PidFile ${quote(join(dir, `${name}.pid`))}`,
    `Mutex file:${dir} default`,
    ...modules,
    'ServerName 127.0.0.1',
    `Listen 127.0.0.1:${port}`,
    `ErrorLog ${quote(log)}`,
    'LogLevel warn',
    // As Node's servers do: any number of requests on one connection.
    'KeepAlive On',
    'MaxKeepAliveRequests 0',
    'KeepAliveTimeout 30',
    'ThreadsPerChild 64',
    'ThreadLimit 64',
    'MaxRequestWorkers 64',
    'ServerLimit 1',
    'StartServers 1',
    'Timeout 30',
    ...(oidc
      ? [
          `OIDCProviderMetadataURL ${quote(oidc.discoveryUrl)}`,
          `OIDCClientID ${quote(oidc.clientId)}`,
          `OIDCClientSecret ${quote(oidc.clientSecret)}`,
          `OIDCRedirectURI ${quote(`http://127.0.0.1:${port}/oauth2/callback`)}`,
          `OIDCCryptoPassphrase ${quote(oidc.passphrase)}`,
          'OIDCScope "openid profile email"',
          'OIDCSSLValidateServer Off',
          '<Location />',
          '  AuthType openid-connect',
          '  Require valid-user',
          '</Location>',
          'ProxyPass /oauth2/callback !',
        ]
      : ['<Location />', '  Require all granted', '</Location>']),
    // The upstream keeps idle connections for 120 s (bench/servers/gateway/echo.mjs): reuse them for less.
    `ProxyPass / ${upstream.replace(/\/?$/, '/')} ttl=60`,
    '',
  ];
  const conf = join(dir, `${name}.conf`);
  writeFileSync(conf, lines.join('\n'));
  return { command: [APACHE, ['-X', '-f', conf]], log };
}
