/**
 * oauth2-proxy's options, every one of its legacy configuration (flags, TOML keys, `OAUTH2_PROXY_*`
 * variables), and what labgate does with each: read it, accept it, or name it as unsupported at
 * start-up (docs/gateway.md, "Coming from oauth2-proxy"; docs/security.md, GATEWAY-15). The table is
 * data; src/gateway/config.ts reads the options it maps.
 */

export type ProxyKind = 'string' | 'bool' | 'list' | 'duration' | 'int';

/**
 * What labgate does with an oauth2-proxy option: `mapped` (read below, by name), `accepted` (nothing to
 * do: labgate behaves that way anyway), `warning` (not supported, said at start-up), `error` (not
 * supported, and ignoring it would change who gets in or where requests go: the gateway refuses to
 * start). An unsupported option set to oauth2-proxy's own default asks for nothing and is not named
 * (docs/security.md, GATEWAY-15).
 */
export type Treatment = 'mapped' | 'accepted' | 'warning' | 'error';

/** One oauth2-proxy option and what labgate does with it. */
export interface ProxyOption {
  kind: ProxyKind;
  treatment: Treatment;
  /** The command-line flag (singular for lists, as oauth2-proxy names them). */
  flag: string;
  /** oauth2-proxy's default, as text. */
  default: string;
  /** What to do instead, for the message. */
  hint: string;
}

function option(
  kind: ProxyKind,
  treatment: Treatment,
  hint = '',
  extra: { flag?: string; default?: string } = {},
): Omit<ProxyOption, 'flag'> & { flag?: string } {
  return {
    kind,
    treatment,
    hint,
    default: extra.default ?? (kind === 'bool' ? 'false' : ''),
    ...(extra.flag === undefined ? {} : { flag: extra.flag }),
  };
}

const OTHER_PROVIDER = 'an option of another oauth2-proxy provider; labgate signs in with GitLab';
const CA = 'certificates are always verified: give a private CA with NODE_EXTRA_CA_CERTS=/path/ca.pem';
/** Why the gateway refuses TLS options: it serves plain HTTP behind a TLS-terminating proxy. */
export const TLS = 'labgate serves plain HTTP: terminate TLS in front of it';
const LOGS = 'labgate logs JSON lines to stdout';
const PAGES = "labgate's pages are not customisable";
const CLAIMS = "labgate reads GitLab's own claims and API";
const DISCOVERY = "ignored: labgate discovers GitLab's endpoints from GITLAB_URL";
const REDIS = 'give one redis:// URL (credentials included) in redis_connection_url or LABGATE_STORE';
const NO_BEARER = 'labgate does not accept bearer tokens in place of a session';
const CSRF = "labgate's sign-in transaction cookie lasts 10 minutes, one per sign-in";

/**
 * Every option of oauth2-proxy's legacy configuration (its `pkg/apis/options` flag sets), by TOML key.
 * The environment variable is `OAUTH2_PROXY_` and the key upper-cased.
 */
export const PROXY_OPTIONS: Readonly<Record<string, ProxyOption>> = (() => {
  const table: Record<string, ReturnType<typeof option>> = {
    // Mapped onto labgate's options.
    client_id: option('string', 'mapped'),
    client_secret: option('string', 'mapped'),
    client_secret_file: option('string', 'mapped'),
    cookie_secret: option('string', 'mapped'),
    cookie_secret_file: option('string', 'mapped'),
    cookie_name: option('string', 'mapped'),
    upstreams: option('list', 'mapped', '', { flag: 'upstream' }),
    http_address: option('string', 'mapped'),
    metrics_address: option('string', 'mapped'),
    gitlab_groups: option('list', 'mapped', '', { flag: 'gitlab-group' }),
    gitlab_projects: option('list', 'mapped', '', { flag: 'gitlab-project' }),
    allowed_groups: option('list', 'mapped', '', { flag: 'allowed-group' }),
    email_domains: option('list', 'mapped', '', { flag: 'email-domain' }),
    skip_auth_routes: option('list', 'mapped', '', { flag: 'skip-auth-route' }),
    skip_auth_regex: option('list', 'mapped'),
    api_routes: option('list', 'mapped', '', { flag: 'api-route' }),
    whitelist_domains: option('list', 'mapped', '', { flag: 'whitelist-domain' }),
    reverse_proxy: option('bool', 'mapped'),
    trusted_proxy_ips: option('list', 'mapped', '', { flag: 'trusted-proxy-ip' }),
    set_xauthrequest: option('bool', 'mapped'),
    pass_access_token: option('bool', 'mapped'),
    pass_user_headers: option('bool', 'mapped', '', { default: 'true' }),
    prefer_email_to_user: option('bool', 'mapped'),
    skip_auth_preflight: option('bool', 'mapped'),
    force_json_errors: option('bool', 'mapped'),
    skip_provider_button: option('bool', 'mapped'),
    oidc_issuer_url: option('string', 'mapped'),
    redirect_url: option('string', 'mapped'),
    provider: option('string', 'mapped', '', { default: 'google' }),
    scope: option('string', 'mapped'),
    cookie_secure: option('bool', 'mapped', '', { default: 'true' }),
    cookie_httponly: option('bool', 'mapped', '', { default: 'true' }),
    cookie_samesite: option('string', 'mapped'),
    cookie_path: option('string', 'mapped', '', { default: '/' }),
    cookie_expire: option('duration', 'mapped', '', { default: '168h' }),
    session_store_type: option('string', 'mapped', '', { default: 'cookie' }),
    redis_connection_url: option('string', 'mapped'),
    upstream_timeout: option('duration', 'mapped', '', { default: '30s' }),

    // labgate does this anyway.
    silence_ping_logging: option('bool', 'accepted'),
    request_logging: option('bool', 'accepted', '', { default: 'true' }),
    standard_logging: option('bool', 'accepted', '', { default: 'true' }),
    auth_logging: option('bool', 'accepted', '', { default: 'true' }),
    pass_basic_auth: option('bool', 'accepted', '', { default: 'true' }),
    // labgate always checks the nonce, whatever this says.
    insecure_oidc_skip_nonce: option('bool', 'accepted', '', { default: 'true' }),

    // Only oauth2-proxy's default is supported, or the option is refused outright.
    proxy_prefix: option('string', 'error', 'the gateway always lives under /oauth2', { default: '/oauth2' }),
    ping_path: option('string', 'error', 'the health check is always /ping', { default: '/ping' }),
    ready_path: option('string', 'error', 'the readiness check is always /ready', { default: '/ready' }),
    insecure_oidc_allow_unverified_email: option(
      'bool',
      'error',
      'refused: labgate never trusts an unverified email',
    ),
    insecure_oidc_skip_issuer_verification: option(
      'bool',
      'error',
      'refused: labgate always verifies the issuer',
    ),
    ssl_insecure_skip_verify: option('bool', 'error', CA),
    ssl_upstream_insecure_skip_verify: option('bool', 'error', CA),
    redis_insecure_skip_tls_verify: option('bool', 'error', CA),
    skip_jwt_bearer_tokens: option('bool', 'error', NO_BEARER),
    extra_jwt_issuers: option('list', 'error', NO_BEARER, { flag: 'extra-jwt-issuer' }),
    trusted_ips: option(
      'list',
      'error',
      'no address bypasses sign-in: list public paths in skip_auth_routes',
      { flag: 'trusted-ip' },
    ),
    ping_user_agent: option('string', 'error', 'no User-Agent bypasses sign-in: health checks use /ping'),
    basic_auth_password: option(
      'string',
      'error',
      'labgate sends no shared password upstream: see --assertion',
    ),
    htpasswd_file: option('string', 'error', 'labgate signs in with GitLab only'),
    htpasswd_user_groups: option('list', 'error', 'labgate signs in with GitLab only', {
      flag: 'htpasswd-user-group',
    }),
    authenticated_emails_file: option('string', 'error', 'write user: or email: rules in LABGATE_ALLOW'),
    allowed_roles: option('list', 'error', 'write GitLab rules in LABGATE_ALLOW', { flag: 'allowed-role' }),
    cookie_domains: option(
      'list',
      'error',
      "labgate's session cookie is host-only (__Host- on https): run one gateway per host",
      { flag: 'cookie-domain' },
    ),
    force_https: option('bool', 'error', 'redirect http to https in the TLS terminator in front of labgate'),
    proxy_websockets: option(
      'bool',
      'error',
      'labgate always proxies WebSockets, checking their Origin against --websocket-origin',
      { default: 'true' },
    ),
    tls_cert_file: option('string', 'error', TLS),
    tls_key_file: option('string', 'error', TLS),
    redis_use_sentinel: option('bool', 'error', REDIS),
    redis_use_cluster: option('bool', 'error', REDIS),
    redis_sentinel_connection_urls: option('list', 'error', REDIS),
    redis_cluster_connection_urls: option('list', 'error', REDIS),

    // Not supported, and nobody is let in who would not be otherwise.
    login_url: option('string', 'warning', DISCOVERY),
    redeem_url: option('string', 'warning', DISCOVERY),
    validate_url: option('string', 'warning', DISCOVERY),
    profile_url: option('string', 'warning', DISCOVERY),
    oidc_jwks_url: option('string', 'warning', DISCOVERY),
    skip_oidc_discovery: option('bool', 'warning', DISCOVERY),
    cookie_refresh: option(
      'duration',
      'warning',
      'labgate refreshes GitLab tokens itself and re-checks access every LABGATE_RECHECK',
      { default: '0' },
    ),
    bearer_token_login_fallback: option('bool', 'warning', NO_BEARER, { default: 'true' }),
    skip_auth_strip_headers: option(
      'bool',
      'warning',
      'labgate always strips identity headers sent by clients',
      {
        default: 'true',
      },
    ),
    pass_host_header: option(
      'bool',
      'warning',
      "the upstream receives LABGATE_URL's host in Host and X-Forwarded-Host",
      {
        default: 'true',
      },
    ),
    pass_authorization_header: option('bool', 'warning', 'see --assertion for a signed identity'),
    set_authorization_header: option('bool', 'warning', 'see --assertion for a signed identity'),
    set_basic_auth: option('bool', 'warning', 'see --assertion for a signed identity'),
    signature_key: option('string', 'warning', 'see --assertion for a signed identity'),
    https_address: option('string', 'warning', TLS, { default: ':443' }),
    tls_min_version: option('string', 'warning', TLS),
    tls_cipher_suites: option('list', 'warning', TLS, { flag: 'tls-cipher-suite' }),
    metrics_secure_address: option('string', 'warning', TLS),
    metrics_tls_cert_file: option('string', 'warning', TLS),
    metrics_tls_key_file: option('string', 'warning', TLS),
    provider_ca_files: option('list', 'warning', CA, { flag: 'provider-ca-file' }),
    use_system_trust_store: option('bool', 'warning', CA),
    code_challenge_method: option('string', 'warning', 'labgate always uses PKCE with S256'),
    force_code_challenge_method: option('string', 'warning', 'labgate always uses PKCE with S256'),
    encode_state: option('bool', 'warning'),
    allow_query_semicolons: option('bool', 'warning'),
    relative_redirect_url: option(
      'bool',
      'warning',
      'the callback URL is always LABGATE_URL/oauth2/callback',
    ),
    real_client_ip_header: option(
      'string',
      'warning',
      'the client address comes from X-Forwarded-For sent by a trusted proxy',
      { default: 'X-Real-IP' },
    ),
    approval_prompt: option('string', 'warning', '', { default: 'force' }),
    prompt: option('string', 'warning'),
    acr_values: option('string', 'warning'),
    resource: option('string', 'warning'),
    auth_request_response_mode: option('string', 'warning'),
    backend_logout_url: option('string', 'warning', 'sign-out revokes the GitLab token'),
    provider_display_name: option('string', 'warning', PAGES),
    skip_claims_from_profile_url: option('bool', 'warning', CLAIMS),
    oidc_email_claim: option('string', 'warning', CLAIMS, { default: 'email' }),
    oidc_groups_claim: option('string', 'warning', CLAIMS, { default: 'groups' }),
    user_id_claim: option('string', 'warning', CLAIMS, { default: 'email' }),
    oidc_audience_claims: option('list', 'warning', CLAIMS, { flag: 'oidc-audience-claim', default: 'aud' }),
    oidc_extra_audiences: option('list', 'warning', CLAIMS, { flag: 'oidc-extra-audience' }),
    oidc_enabled_signing_algs: option('list', 'warning', CLAIMS, { flag: 'oidc-enabled-signing-alg' }),
    oidc_public_key_files: option('list', 'warning', CLAIMS, { flag: 'oidc-public-key-file' }),
    cookie_csrf_expire: option('duration', 'warning', CSRF, { default: '15m' }),
    cookie_csrf_per_request: option('bool', 'warning', CSRF),
    cookie_csrf_per_request_limit: option('int', 'warning', CSRF, { default: '0' }),
    cookie_csrf_samesite: option('string', 'warning', CSRF),
    session_cookie_minimal: option('bool', 'warning', 'sessions are kept in the store'),
    redis_username: option('string', 'warning', REDIS),
    redis_password: option('string', 'warning', REDIS),
    redis_sentinel_password: option('string', 'warning', REDIS),
    redis_sentinel_master_name: option('string', 'warning', REDIS),
    redis_ca_path: option('string', 'warning', CA),
    redis_connection_idle_timeout: option('int', 'warning', '', { default: '0' }),
    disable_keep_alives: option('bool', 'warning'),
    flush_interval: option('duration', 'warning', 'responses are streamed as they arrive', { default: '1s' }),
    gcp_healthchecks: option('bool', 'warning', 'the health check is /ping'),
    errors_to_info_log: option('bool', 'warning', LOGS),
    exclude_logging_paths: option('list', 'warning', LOGS, { flag: 'exclude-logging-path' }),
    logging_filename: option('string', 'warning', LOGS),
    logging_max_size: option('int', 'warning', LOGS, { default: '100' }),
    logging_max_age: option('int', 'warning', LOGS, { default: '7' }),
    logging_max_backups: option('int', 'warning', LOGS, { default: '0' }),
    logging_local_time: option('bool', 'warning', LOGS, { default: 'true' }),
    logging_compress: option('bool', 'warning', LOGS),
    request_id_header: option('string', 'warning', LOGS, { default: 'X-Request-Id' }),
    auth_logging_format: option('string', 'warning', LOGS),
    request_logging_format: option('string', 'warning', LOGS),
    standard_logging_format: option('string', 'warning', LOGS),
    custom_templates_dir: option('string', 'warning', PAGES),
    custom_sign_in_logo: option('string', 'warning', PAGES),
    banner: option('string', 'warning', PAGES),
    footer: option('string', 'warning', PAGES),
    display_htpasswd_form: option('bool', 'warning', PAGES, { default: 'true' }),
    show_debug_on_error: option('bool', 'warning', PAGES),
    jwt_key: option('string', 'warning', OTHER_PROVIDER),
    jwt_key_file: option('string', 'warning', OTHER_PROVIDER),
    pubjwk_url: option('string', 'warning', OTHER_PROVIDER),
    azure_tenant: option('string', 'warning', OTHER_PROVIDER, { default: 'common' }),
    azure_graph_group_field: option('string', 'warning', OTHER_PROVIDER),
    entra_id_allowed_tenants: option('list', 'warning', OTHER_PROVIDER, { flag: 'entra-id-allowed-tenant' }),
    entra_id_federated_token_auth: option('bool', 'warning', OTHER_PROVIDER),
    bitbucket_team: option('string', 'warning', OTHER_PROVIDER),
    bitbucket_repository: option('string', 'warning', OTHER_PROVIDER),
    github_org: option('string', 'warning', OTHER_PROVIDER),
    github_team: option('string', 'warning', OTHER_PROVIDER),
    github_repo: option('string', 'warning', OTHER_PROVIDER),
    github_token: option('string', 'warning', OTHER_PROVIDER),
    github_users: option('list', 'warning', OTHER_PROVIDER, { flag: 'github-user' }),
    google_group: option('list', 'warning', OTHER_PROVIDER, { flag: '' }),
    google_groups: option('list', 'warning', OTHER_PROVIDER, { flag: 'google-group' }),
    google_admin_email: option('string', 'warning', OTHER_PROVIDER),
    google_service_account_json: option('string', 'warning', OTHER_PROVIDER),
    google_use_application_default_credentials: option('string', 'warning', OTHER_PROVIDER),
    google_target_principal: option('string', 'warning', OTHER_PROVIDER),
    google_use_organization_id: option('string', 'warning', OTHER_PROVIDER),
    google_admin_api_user_scope: option('string', 'warning', OTHER_PROVIDER),
    keycloak_groups: option('list', 'warning', OTHER_PROVIDER, { flag: 'keycloak-group' }),
  };
  const result: Record<string, ProxyOption> = {};
  for (const [key, value] of Object.entries(table)) {
    result[key] = { ...value, flag: value.flag ?? key.replace(/_/g, '-') };
  }
  return result;
})();

/** oauth2-proxy's environment variable for a TOML key. */
export const envNameOf = (key: string): string => `OAUTH2_PROXY_${key.toUpperCase()}`;
