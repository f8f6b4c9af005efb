/**
 * The emulator's OAuth 2.0 provider against GitLab's wire format (docs/emulator.md, Fidelity),
 * driven with plain fetch and a scripted browser through GitLab's own HTML forms.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { demoFixtures, type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import {
  authorizeUrl,
  Browser,
  callbackParams,
  codeFlow,
  errorPageDescription,
  formWith,
  type Page,
  passwordOf,
  pkce,
  postForm,
  redirectingLink,
  type TokenSet,
  totp,
} from './browser.js';

// GitLab's texts, copied from GitLab's and Doorkeeper's locale files rather than from the emulator.
const INVALID_GRANT =
  'The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.';
const INVALID_CLIENT =
  'Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.';
const UNAUTHORIZED_CLIENT = 'The client is not authorized to perform this request using this method.';
const INVALID_SCOPE = 'The requested scope is invalid, unknown, or malformed.';
const INVALID_REDIRECT_URI = 'The redirect URI included is not valid.';
const CALLBACK = 'http://127.0.0.1:3000/auth/callback';
const PUBLIC_CALLBACK = 'http://127.0.0.1/callback';
const CAROL_TOTP_SECRET = 'JBSWY3DPEHPK3PXP';
const CAROL_RECOVERY_CODE = '3f4a1c9e2b7d8a60';

type App = RunningEmulator['applications'][number];

let gitlab: RunningEmulator;
let app: App;
let publicApp: App;

beforeAll(async () => {
  gitlab = await startEmulator();
  app = gitlab.applications[0]!;
  publicApp = gitlab.applications[1]!;
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

// ---------------------------------------------------------------------------------------------
// Helpers

const tokenUrl = () => `${gitlab.url}/oauth/token`;

/** An authorize URL for the confidential demo app; `undefined` removes a parameter. */
function authorizeFor(params: Record<string, string | undefined> = {}): string {
  return authorizeUrl(gitlab.url, {
    client_id: app.uid,
    redirect_uri: CALLBACK,
    response_type: 'code',
    scope: 'openid read_user',
    state: 'xyz',
    ...params,
  });
}

/** A browser signed in at the emulated GitLab. */
async function signedIn(user = 'alice', otp?: string): Promise<Browser> {
  const browser = new Browser();
  const outcome = await browser.signInAndAuthorize({
    url: gitlab.url,
    authorizeUrl: `${gitlab.url}/users/sign_in`,
    login: user,
    password: passwordOf(gitlab, user),
    ...(otp === undefined ? {} : { otp }),
  });
  expect(outcome.page.body).toContain('data-testid="signed-in-user"');
  return browser;
}

/** Opens an authorize URL in a signed-in browser and expects GitLab's consent page. */
async function consent(browser: Browser, url: string): Promise<Page> {
  const page = await browser.get(url);
  expect(page.status, page.body).toBe(200);
  expect(page.body).toContain('data-testid="authorization-button"');
  return page;
}

/** Approves the consent page and returns the redirect to the client. */
async function approve(browser: Browser, page: Page): Promise<string> {
  const answer = await browser.submit(formWith(page, { testId: 'authorization-button' }));
  expect(answer.status).toBe(302);
  return answer.location!;
}

/** Signs in, consents (unless GitLab skips consent) and returns a code issued for this authorize URL. */
async function codeFor(url: string, browser?: Browser): Promise<string> {
  const b = browser ?? (await signedIn());
  const page = await b.get(url);
  const location = page.body.includes('data-testid="authorization-button"')
    ? await approve(b, page)
    : redirectingLink(page);
  const code = callbackParams(location)['code'];
  expect(code).toMatch(/^[0-9a-f]{64}$/);
  return code!;
}

function redeem(fields: Record<string, string | undefined>, headers: Record<string, string> = {}) {
  return postForm(tokenUrl(), fields, headers);
}

/** The confidential app's credentials as form fields (`client_secret_post`). */
const clientPost = () => ({ client_id: app.uid, client_secret: app.secret });

/** Asserts a Doorkeeper token-endpoint error: status, exact body and GitLab's headers. */
async function expectTokenError(res: Response, status: number, error: string, description: string) {
  expect(res.status).toBe(status);
  expect(await res.text()).toBe(JSON.stringify({ error, error_description: description }));
  expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
  expect(res.headers.get('cache-control')).toBe('no-store, no-cache');
  // Doorkeeper 5.8.1 `ErrorResponse#headers` has no `Pragma`; only the success (`TokenResponse`) sends it.
  expect(res.headers.get('pragma')).toBeNull();
  expect(res.headers.get('www-authenticate')).toBe(
    `Bearer realm="Doorkeeper", error="${error}", error_description="${description}"`,
  );
}

function mint(user = 'alice', scopes?: string[], clientId?: string): TokenSet {
  return gitlab.control.mintToken({
    user,
    ...(scopes ? { scopes } : {}),
    ...(clientId ? { clientId } : {}),
  }) as TokenSet;
}

function refresh(refreshToken: string, extra: Record<string, string | undefined> = clientPost()) {
  return redeem({ grant_type: 'refresh_token', refresh_token: refreshToken, ...extra });
}

function tokenInfo(accessToken: string) {
  return fetch(`${gitlab.url}/oauth/token/info`, { headers: { authorization: `Bearer ${accessToken}` } });
}

function userinfo(accessToken: string) {
  return fetch(`${gitlab.url}/oauth/userinfo`, { headers: { authorization: `Bearer ${accessToken}` } });
}

function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;
}

/** RFC 6749 §2.3.1 form-url-encoding as oauth4webapi applies it: every non-alphanumeric byte. */
function formUrlEncodeStrict(value: string): string {
  return [...Buffer.from(value, 'utf8')]
    .map((byte) =>
      /[A-Za-z0-9]/.test(String.fromCharCode(byte))
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`,
    )
    .join('');
}

function jwtPayload(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8'));
}

// ---------------------------------------------------------------------------------------------

describe('authorization code flow through GitLab pages', () => {
  it('signs in, consents and redeems the code with PKCE S256', async () => {
    const browser = new Browser();
    const { verifier, challenge } = pkce();
    const url = authorizeFor({ nonce: 'n-0S6', code_challenge: challenge, code_challenge_method: 'S256' });

    const first = await browser.get(url);
    expect(first.status).toBe(302);
    expect(first.location).toBe(`${gitlab.url}/users/sign_in`);

    const signInPage = await browser.get(first.location!);
    expect(signInPage.status).toBe(200);
    const signIn = formWith(signInPage, { testId: 'sign-in-button' });
    expect(signIn.method).toBe('post');
    expect(signIn.ids).toEqual(expect.arrayContaining(['user_login', 'user_password']));
    expect(signIn.fields['authenticity_token']).toMatch(/.{20,}/);

    const signedInAnswer = await browser.submit(signIn, {
      'user[login]': 'alice',
      'user[password]': passwordOf(gitlab, 'alice'),
    });
    expect(signedInAnswer.status).toBe(302);
    expect(signedInAnswer.location).toBe(url);

    const consentPage = await consent(browser, signedInAnswer.location!);
    const authorize = formWith(consentPage, { testId: 'authorization-button' });
    const deny = formWith(consentPage, { testId: 'deny-button' });
    expect(deny.fields['_method']).toBe('delete');
    expect(authorize.fields['_method']).toBeUndefined();
    for (const form of [authorize, deny]) {
      expect(form.method).toBe('post');
      expect(form.action).toBe(`${gitlab.url}/oauth/authorize`);
      expect(form.fields).toMatchObject({
        client_id: app.uid,
        redirect_uri: CALLBACK,
        state: 'xyz',
        response_type: 'code',
        scope: 'openid read_user',
        nonce: 'n-0S6',
        code_challenge: challenge,
        code_challenge_method: 'S256',
      });
    }

    const location = await approve(browser, consentPage);
    expect(location).toMatch(/^http:\/\/127\.0\.0\.1:3000\/auth\/callback\?code=[0-9a-f]{64}&state=xyz$/);

    const res = await redeem({
      grant_type: 'authorization_code',
      code: callbackParams(location)['code'],
      redirect_uri: CALLBACK,
      code_verifier: verifier,
      ...clientPost(),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store, no-cache');
    expect(res.headers.get('pragma')).toBe('no-cache');
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    const tokens = (await res.json()) as TokenSet;
    expect(Object.keys(tokens)).toEqual([
      'access_token',
      'token_type',
      'expires_in',
      'refresh_token',
      'scope',
      'created_at',
      'id_token',
    ]);
    expect(tokens).toMatchObject({ token_type: 'Bearer', expires_in: 7200, scope: 'openid read_user' });
    expect(tokens.access_token).toMatch(/^[0-9a-f]{64}$/);
    expect(tokens.refresh_token).toMatch(/^[0-9a-f]{64}$/);
    expect(Math.abs(tokens.created_at - gitlab.control.now().getTime() / 1000)).toBeLessThan(5);
    expect(jwtPayload(tokens.id_token!)['nonce']).toBe('n-0S6');
    expect((await tokenInfo(tokens.access_token)).status).toBe(200);
  });

  it('supports plain PKCE', async () => {
    const verifier = 'a-plain-verifier-that-is-long-enough-to-be-valid-0123';
    const url = authorizeFor({ code_challenge: verifier, code_challenge_method: 'plain' });
    const wrong = await redeem({
      grant_type: 'authorization_code',
      code: await codeFor(url),
      redirect_uri: CALLBACK,
      code_verifier: `${verifier}x`,
      ...clientPost(),
    });
    await expectTokenError(wrong, 400, 'invalid_grant', INVALID_GRANT);
    const right = await redeem({
      grant_type: 'authorization_code',
      code: await codeFor(url),
      redirect_uri: CALLBACK,
      code_verifier: verifier,
      ...clientPost(),
    });
    expect(right.status).toBe(200);
  });

  it('echoes state verbatim and leaves a blank state out', async () => {
    const browser = await signedIn();
    const state = 'a b/c?d=e&f=ü%';
    const location = await approve(browser, await consent(browser, authorizeFor({ state })));
    expect(callbackParams(location)['state']).toBe(state);
    const blank = await approve(browser, await consent(browser, authorizeFor({ state: '' })));
    expect(blank).toMatch(/\?code=[0-9a-f]{64}$/);
  });

  it('redeems a code once only', async () => {
    const { verifier, challenge } = pkce();
    const code = await codeFor(authorizeFor({ code_challenge: challenge, code_challenge_method: 'S256' }));
    const fields = {
      grant_type: 'authorization_code',
      code,
      redirect_uri: CALLBACK,
      code_verifier: verifier,
    };
    expect((await redeem({ ...fields, ...clientPost() })).status).toBe(200);
    await expectTokenError(await redeem({ ...fields, ...clientPost() }), 400, 'invalid_grant', INVALID_GRANT);
  });

  it('expires a code after 600 s', async () => {
    const browser = await signedIn();
    const fields = (code: string) => ({
      grant_type: 'authorization_code',
      code,
      redirect_uri: CALLBACK,
      ...clientPost(),
    });
    const fresh = await codeFor(authorizeFor(), browser);
    gitlab.control.advanceClock(590);
    expect((await redeem(fields(fresh))).status).toBe(200);
    const stale = await codeFor(authorizeFor({ scope: 'read_user' }), browser);
    gitlab.control.advanceClock(601);
    await expectTokenError(await redeem(fields(stale)), 400, 'invalid_grant', INVALID_GRANT);
  });

  it('refuses a wrong verifier, a verifier without challenge and a missing verifier', async () => {
    const browser = await signedIn();
    const { challenge } = pkce();
    const withChallenge = authorizeFor({ code_challenge: challenge, code_challenge_method: 'S256' });
    const base = { grant_type: 'authorization_code', redirect_uri: CALLBACK, ...clientPost() };

    const wrong = await redeem({
      ...base,
      code: await codeFor(withChallenge, browser),
      code_verifier: pkce().verifier,
    });
    await expectTokenError(wrong, 400, 'invalid_grant', INVALID_GRANT);

    const unasked = await redeem({
      ...base,
      code: await codeFor(authorizeFor(), browser),
      code_verifier: pkce().verifier,
    });
    await expectTokenError(unasked, 400, 'invalid_grant', INVALID_GRANT);

    // Caught before client authentication, so even a wrong secret gets this answer.
    const missing = await redeem({
      ...base,
      client_secret: 'wrong',
      code: await codeFor(withChallenge, browser),
    });
    await expectTokenError(missing, 400, 'invalid_request', 'Missing required parameter: code_verifier.');
  });

  it('checks redirect_uri at the token endpoint against the one of the grant', async () => {
    const browser = await signedIn();
    const base = { grant_type: 'authorization_code', ...clientPost() };
    const missing = await redeem({ ...base, code: await codeFor(authorizeFor(), browser) });
    await expectTokenError(missing, 400, 'invalid_request', 'Missing required parameter: redirect_uri.');
    const other = await redeem({
      ...base,
      code: await codeFor(authorizeFor(), browser),
      redirect_uri: 'http://localhost:3000/auth/callback',
    });
    await expectTokenError(other, 400, 'invalid_grant', INVALID_GRANT);
  });

  it('authenticates the client: secret in the body, raw HTTP Basic, not form-encoded Basic', async () => {
    const browser = await signedIn();
    const fields = async () => ({
      grant_type: 'authorization_code',
      code: await codeFor(authorizeFor(), browser),
      redirect_uri: CALLBACK,
    });

    const wrongSecret = await redeem({
      ...(await fields()),
      client_id: app.uid,
      client_secret: `${app.secret}x`,
    });
    await expectTokenError(wrongSecret, 401, 'invalid_client', INVALID_CLIENT);

    const noSecret = await redeem({ ...(await fields()), client_id: app.uid });
    await expectTokenError(noSecret, 401, 'invalid_client', INVALID_CLIENT);

    const raw = await redeem(await fields(), { authorization: basic(app.uid, app.secret) });
    expect(raw.status).toBe(200);

    // oauth4webapi's client_secret_basic: GitLab does not form-url-decode, so `gloas%2D…` is wrong.
    expect(formUrlEncodeStrict(app.secret)).toContain('gloas%2D');
    const encoded = await redeem(await fields(), {
      authorization: basic(formUrlEncodeStrict(app.uid), formUrlEncodeStrict(app.secret)),
    });
    await expectTokenError(encoded, 401, 'invalid_client', INVALID_CLIENT);

    // Basic wins over the body: good body credentials do not rescue a bad Basic header.
    const basicWins = await redeem(
      { ...(await fields()), ...clientPost() },
      { authorization: basic(app.uid, 'wrong') },
    );
    await expectTokenError(basicWins, 401, 'invalid_client', INVALID_CLIENT);

    // The scheme test is case-sensitive: a `basic` header is ignored and the body is read.
    const lowercase = await redeem(
      { ...(await fields()), ...clientPost() },
      { authorization: `basic ${Buffer.from(`${app.uid}:wrong`).toString('base64')}` },
    );
    expect(lowercase.status).toBe(200);
  });

  it('refuses a public app without PKCE by default, and lets it redeem with its client id only', async () => {
    const browser = await signedIn();
    const publicAuthorize = (params: Record<string, string>) =>
      authorizeUrl(gitlab.url, {
        client_id: publicApp.uid,
        redirect_uri: PUBLIC_CALLBACK,
        response_type: 'code',
        scope: 'openid',
        state: 'p',
        ...params,
      });

    const refused = await browser.get(publicAuthorize({}));
    expect(refused.status).toBe(200);
    expect(refused.location).toBeNull();
    expect(errorPageDescription(refused)).toBe('Code challenge is required.');

    const { verifier, challenge } = pkce();
    const code = await codeFor(
      publicAuthorize({ code_challenge: challenge, code_challenge_method: 'S256' }),
      browser,
    );
    const res = await redeem({
      grant_type: 'authorization_code',
      code,
      redirect_uri: PUBLIC_CALLBACK,
      client_id: publicApp.uid,
      code_verifier: verifier,
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as TokenSet).scope).toBe('openid');

    gitlab.control.setBehaviour({ pkce: 'dynamic' });
    const withoutPkce = await codeFor(publicAuthorize({}), browser);
    const plainRes = await redeem({
      grant_type: 'authorization_code',
      code: withoutPkce,
      redirect_uri: PUBLIC_CALLBACK,
      client_id: publicApp.uid,
    });
    expect(plainRes.status).toBe(200);
  });

  it('redirects a denial with access_denied and the state', async () => {
    const browser = await signedIn();
    const page = await consent(browser, authorizeFor({ state: 's t' }));
    const denied = await browser.submit(formWith(page, { testId: 'deny-button' }));
    expect(denied.status).toBe(302);
    expect(denied.location).toBe(
      `${CALLBACK}?error=access_denied&error_description=The+resource+owner+or+authorization+server+denied+the+request.&state=s+t`,
    );
  });

  it('refuses consent forms without the CSRF token', async () => {
    const browser = await signedIn();
    const page = await consent(browser, authorizeFor());
    const forged = await browser.submit(formWith(page, { testId: 'authorization-button' }), {
      authenticity_token: null,
    });
    expect(forged.status).toBe(422);
    expect(forged.location).toBeNull();
  });
});

describe('authorize error pages', () => {
  const errors: [string, Record<string, string | undefined>, string][] = [
    ['no client_id', { client_id: undefined }, 'Missing required parameter: client_id.'],
    ['an unknown client', { client_id: 'f'.repeat(64) }, INVALID_CLIENT],
    ['no redirect_uri', { redirect_uri: undefined }, INVALID_REDIRECT_URI],
    ['a trailing slash', { redirect_uri: `${CALLBACK}/` }, INVALID_REDIRECT_URI],
    ['another host', { redirect_uri: 'http://evil.test:3000/auth/callback' }, INVALID_REDIRECT_URI],
    ['a path in another case', { redirect_uri: 'http://127.0.0.1:3000/auth/Callback' }, INVALID_REDIRECT_URI],
    ['a fragment', { redirect_uri: `${CALLBACK}#x` }, INVALID_REDIRECT_URI],
    ['another localhost port', { redirect_uri: 'http://localhost:9999/auth/callback' }, INVALID_REDIRECT_URI],
    ['https instead of http', { redirect_uri: 'https://127.0.0.1:3000/auth/callback' }, INVALID_REDIRECT_URI],
    ['no response_type', { response_type: undefined }, 'Missing required parameter: response_type.'],
    [
      'response_type=token',
      { response_type: 'token' },
      'The authorization server does not support this response type.',
    ],
    ['a comma-separated scope', { scope: 'openid,email' }, INVALID_SCOPE],
    ['a scope the app lacks', { scope: 'openid api' }, INVALID_SCOPE],
    ['no scope (the default, api, is not registered)', { scope: undefined }, INVALID_SCOPE],
    ['an unknown scope', { scope: 'openid read_everything' }, INVALID_SCOPE],
    [
      'a challenge without method',
      { code_challenge: pkce().challenge },
      'The code_challenge_method must be one of plain, S256.',
    ],
    [
      'an unknown challenge method',
      { code_challenge: pkce().challenge, code_challenge_method: 'S512' },
      'The code_challenge_method must be one of plain, S256.',
    ],
    // Doorkeeper's order: the redirect URI is checked before the scope.
    [
      'a bad redirect_uri and a bad scope',
      { redirect_uri: `${CALLBACK}/`, scope: 'api' },
      INVALID_REDIRECT_URI,
    ],
  ];

  it.each(errors)('renders the 200 error page, never a redirect, for %s', async (_, params, description) => {
    const browser = await signedIn();
    const page = await browser.get(authorizeFor(params));
    expect(page.status).toBe(200);
    expect(page.location).toBeNull();
    expect(page.headers.get('location')).toBeNull();
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(errorPageDescription(page)).toBe(description);
    expect(page.body).not.toContain('authorization-button');
  });

  it.each([
    ['an extra query when the registered URI has none', `${CALLBACK}?x=1`],
    ['another port on 127.0.0.1', 'http://127.0.0.1:9999/auth/callback'],
    ['an upper-case host name', 'http://LOCALHOST:3000/auth/callback'],
  ])('accepts %s and redirects to the requested URI', async (_, redirectUri) => {
    const browser = await signedIn();
    const location = await approve(
      browser,
      await consent(browser, authorizeFor({ redirect_uri: redirectUri })),
    );
    expect(location.toLowerCase().startsWith(redirectUri.toLowerCase())).toBe(true);
    expect(location.slice(redirectUri.length)).toMatch(/^[?&]code=[0-9a-f]{64}&state=xyz$/);
  });
});

describe('redirect URIs registered with a query', () => {
  const REGISTERED = 'https://app.example.com/cb?a=1&b=2';
  let custom: RunningEmulator;
  beforeAll(async () => {
    const fixtures = demoFixtures();
    fixtures.applications![0]!.redirectUris = [REGISTERED];
    custom = await startEmulator({ fixtures });
  });
  afterAll(() => custom.close());

  it.each([
    ['the same pairs in another order', 'https://app.example.com/cb?b=2&a=1', true],
    ['an explicit default port and an upper-case host', 'https://APP.example.com:443/cb?a=1&b=2', true],
    ['a missing pair', 'https://app.example.com/cb?a=1', false],
    ['no query', 'https://app.example.com/cb', false],
    ['an extra pair', 'https://app.example.com/cb?a=1&b=2&c=3', false],
  ])('matches %s: %s → %s', async (_, redirectUri, accepted) => {
    const browser = new Browser();
    const outcome = await browser.signInAndAuthorize({
      url: custom.url,
      authorizeUrl: authorizeUrl(custom.url, {
        client_id: custom.applications[0]!.uid,
        redirect_uri: redirectUri,
        response_type: 'code',
        scope: 'openid',
      }),
      login: 'alice',
      password: passwordOf(custom, 'alice'),
    });
    expect(outcome.kind).toBe(accepted ? 'consent' : 'page');
    if (!accepted) expect(errorPageDescription(outcome.page)).toBe(INVALID_REDIRECT_URI);
  });
});

describe('sign-in at the emulated GitLab', () => {
  async function signInAttempt(login: string, password: string): Promise<Page> {
    const browser = new Browser();
    const page = await browser.get(`${gitlab.url}/users/sign_in`);
    const answer = await browser.submit(formWith(page, { field: 'user[login]' }), {
      'user[login]': login,
      'user[password]': password,
    });
    expect(answer.status).toBe(302);
    expect(answer.location).toBe(`${gitlab.url}/users/sign_in`);
    return browser.get(answer.location!);
  }

  it('shows "Invalid login or password." for a wrong password', async () => {
    const page = await signInAttempt('alice', 'not-the-password');
    expect(page.status).toBe(200);
    expect(page.body).toContain('Invalid login or password.');
    expect(page.forms.some((f) => 'user[login]' in f.fields)).toBe(true);
  });

  it('refuses a blocked user with the blocked message', async () => {
    const page = await signInAttempt('dave', passwordOf(gitlab, 'dave'));
    expect(page.body).toContain('Your account has been blocked.');
    expect(page.forms.some((f) => 'user[login]' in f.fields)).toBe(true);
  });

  it('shows the error page to a user whose email is unconfirmed', async () => {
    const outcome = await new Browser().signInAndAuthorize({
      url: gitlab.url,
      authorizeUrl: authorizeFor(),
      login: 'frank',
      password: passwordOf(gitlab, 'frank'),
    });
    expect(outcome.kind).toBe('page');
    expect(outcome.page.status).toBe(200);
    expect(errorPageDescription(outcome.page)).toBe(
      'Verify the email address in your account profile before you sign in.',
    );
  });

  it('answers 422 to a sign-in without a valid authenticity token', async () => {
    const browser = new Browser();
    const page = await browser.get(`${gitlab.url}/users/sign_in`);
    const form = formWith(page, { field: 'user[login]' });
    const credentials = { 'user[login]': 'alice', 'user[password]': passwordOf(gitlab, 'alice') };
    expect((await browser.submit(form, { ...credentials, authenticity_token: null })).status).toBe(422);
    expect((await browser.submit(form, { ...credentials, authenticity_token: 'forged' })).status).toBe(422);
    // Still signed out.
    expect((await browser.get(authorizeFor())).location).toBe(`${gitlab.url}/users/sign_in`);
  });

  describe('two-factor authentication', () => {
    it('computes TOTP codes as RFC 6238 does (test helper check)', () => {
      // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", last six digits.
      expect(totp('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', 59_000)).toBe('287082');
      expect(totp('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', 1_111_111_109_000)).toBe('081804');
    });

    it('asks for the code after the password, refuses a wrong one and accepts the TOTP', async () => {
      const browser = new Browser();
      const url = authorizeFor();
      const signInPage = await browser.get((await browser.get(url)).location!);
      const step = await browser.submit(formWith(signInPage, { field: 'user[login]' }), {
        'user[login]': 'carol',
        'user[password]': passwordOf(gitlab, 'carol'),
      });
      expect(step.status).toBe(200);
      const twoFactor = formWith(step, { testId: 'two-fa-code-field' });
      expect('user[otp_attempt]' in twoFactor.fields).toBe(true);
      expect(twoFactor.fields['authenticity_token']).toBeTruthy();

      const now = gitlab.control.now().getTime();
      const valid = new Set([-2, -1, 0, 1, 2].map((step) => totp(CAROL_TOTP_SECRET, now + step * 30_000)));
      let wrong = 100_000;
      while (valid.has(String(wrong))) wrong++;
      const refused = await browser.submit(twoFactor, { 'user[otp_attempt]': String(wrong) });
      expect(refused.status).toBe(200);
      expect(refused.body).toContain('Invalid two-factor code.');

      const again = formWith(refused, { field: 'user[otp_attempt]' });
      const accepted = await browser.submit(again, {
        'user[otp_attempt]': totp(CAROL_TOTP_SECRET, gitlab.control.now().getTime()),
      });
      expect(accepted.status).toBe(302);
      expect(accepted.location).toBe(url);
      await consent(browser, url);
    });

    it('accepts a recovery code once', async () => {
      const attempt = () =>
        new Browser().signInAndAuthorize({
          url: gitlab.url,
          authorizeUrl: authorizeFor(),
          login: 'carol',
          password: passwordOf(gitlab, 'carol'),
          otp: CAROL_RECOVERY_CODE,
        });
      expect((await attempt()).kind).toBe('consent');
      const second = await attempt();
      expect(second.kind).toBe('page');
      expect(second.page.body).toContain('Invalid two-factor code.');
    });
  });
});

describe('consent skipping and OIDC prompt', () => {
  const SCOPE = 'openid profile email read_user';

  it('skips consent for a confidential app with a matching token: 200 "Redirecting" page', async () => {
    const { browser } = await codeFlow(gitlab, { scope: SCOPE });
    // Same scope set, another order.
    const page = await browser.get(authorizeFor({ scope: 'read_user email openid profile', state: 'again' }));
    expect(page.status).toBe(200);
    expect(page.location).toBeNull();
    expect(page.body).toContain('Redirecting');
    const link = redirectingLink(page);
    expect(link).toMatch(/^http:\/\/127\.0\.0\.1:3000\/auth\/callback\?code=[0-9a-f]{64}&state=again$/);
    const res = await redeem({
      grant_type: 'authorization_code',
      code: callbackParams(link)['code'],
      redirect_uri: CALLBACK,
      ...clientPost(),
    });
    expect(res.status).toBe(200);
  });

  it('answers a plain 302 instead with autoApprove: redirect', async () => {
    const { browser } = await codeFlow(gitlab, { scope: SCOPE });
    gitlab.control.setBehaviour({ autoApprove: 'redirect' });
    const page = await browser.get(authorizeFor({ scope: SCOPE }));
    expect(page.status).toBe(302);
    expect(page.location).toMatch(
      /^http:\/\/127\.0\.0\.1:3000\/auth\/callback\?code=[0-9a-f]{64}&state=xyz$/,
    );
  });

  it('asks again for other scopes, for prompt=consent, and for a public app', async () => {
    const { browser } = await codeFlow(gitlab, { scope: SCOPE });
    await consent(browser, authorizeFor({ scope: 'openid read_user' }));
    await consent(browser, authorizeFor({ scope: SCOPE, prompt: 'consent' }));

    await codeFlow(gitlab, { app: 1, scope: 'openid', browser });
    const { challenge } = pkce();
    await consent(
      browser,
      authorizeUrl(gitlab.url, {
        client_id: publicApp.uid,
        redirect_uri: PUBLIC_CALLBACK,
        response_type: 'code',
        scope: 'openid',
        code_challenge: challenge,
        code_challenge_method: 'S256',
      }),
    );
  });

  it('ignores prompt=consent without openid (OIDC parameters need openid)', async () => {
    const { browser } = await codeFlow(gitlab, { scope: 'read_user' });
    const page = await browser.get(authorizeFor({ scope: 'read_user', prompt: 'consent' }));
    expect(page.body).toContain('Redirecting');
  });

  it('redirects prompt=none errors to the client: login_required, consent_required', async () => {
    const anonymous = await new Browser().get(authorizeFor({ prompt: 'none', state: 's1' }));
    expect(anonymous.status).toBe(302);
    expect(callbackParams(anonymous.location!)).toMatchObject({ error: 'login_required', state: 's1' });
    expect(anonymous.location!.startsWith(`${CALLBACK}?`)).toBe(true);

    const browser = await signedIn();
    const noConsent = await browser.get(authorizeFor({ prompt: 'none', state: 's2' }));
    expect(noConsent.status).toBe(302);
    expect(callbackParams(noConsent.location!)).toMatchObject({ error: 'consent_required', state: 's2' });

    for (const prompt of ['none login', 'bogus']) {
      const bad = await browser.get(authorizeFor({ prompt }));
      expect(bad.status).toBe(302);
      expect(callbackParams(bad.location!)['error']).toBe('invalid_request');
    }
  });

  it('answers prompt=none with a code when consent can be skipped', async () => {
    const { browser } = await codeFlow(gitlab, { scope: SCOPE });
    const page = await browser.get(authorizeFor({ scope: SCOPE, prompt: 'none' }));
    expect(callbackParams(redirectingLink(page))['code']).toMatch(/^[0-9a-f]{64}$/);
  });

  it('renders consent for prompt=none when a public app has a matching token (GitLab quirk)', async () => {
    const { browser } = await codeFlow(gitlab, { app: 1, scope: 'openid' });
    const { challenge } = pkce();
    await consent(
      browser,
      authorizeUrl(gitlab.url, {
        client_id: publicApp.uid,
        redirect_uri: PUBLIC_CALLBACK,
        response_type: 'code',
        scope: 'openid',
        prompt: 'none',
        code_challenge: challenge,
        code_challenge_method: 'S256',
      }),
    );
  });

  it('signs the user out for prompt=login and returns without it after sign-in', async () => {
    const browser = await signedIn();
    const page = await browser.get(authorizeFor({ prompt: 'login consent', state: 'L' }));
    expect(page.status).toBe(302);
    expect(page.location).toBe(`${gitlab.url}/users/sign_in`);
    const home = await browser.get(`${gitlab.url}/`);
    expect(home.location).toBe(`${gitlab.url}/users/sign_in`);

    const signInPage = await browser.get(page.location!);
    const back = await browser.submit(formWith(signInPage, { field: 'user[login]' }), {
      'user[login]': 'alice',
      'user[password]': passwordOf(gitlab, 'alice'),
    });
    expect(back.status).toBe(302);
    const returned = new URL(back.location!);
    expect(returned.searchParams.get('prompt')).toBe('consent');
    expect(returned.searchParams.get('state')).toBe('L');
    await consent(browser, back.location!);
  });

  it('re-authenticates when the sign-in is older than max_age', async () => {
    const browser = await signedIn();
    await consent(browser, authorizeFor({ max_age: '60' }));
    gitlab.control.advanceClock(120);
    const stale = await browser.get(authorizeFor({ max_age: '60' }));
    expect(stale.location).toBe(`${gitlab.url}/users/sign_in`);
    // Ruby's `to_i`: a negative or malformed max_age is ignored.
    const other = await signedIn();
    gitlab.control.advanceClock(120);
    await consent(other, authorizeFor({ max_age: '-5' }));
  });

  it('answers response_mode=form_post with an auto-submitting form', async () => {
    const browser = await signedIn();
    const page = await consent(browser, authorizeFor({ response_mode: 'form_post', state: 'fp' }));
    const answer = await browser.submit(formWith(page, { testId: 'authorization-button' }));
    expect(answer.status).toBe(200);
    expect(answer.location).toBeNull();
    // It submits itself: a script calls submit() on the form.
    expect(answer.body).toMatch(/\.submit\(\)/);
    const [form] = answer.forms;
    expect(form).toMatchObject({ action: CALLBACK, method: 'post' });
    expect(form!.fields['code']).toMatch(/^[0-9a-f]{64}$/);
    expect(form!.fields['state']).toBe('fp');
  });

  it('answers response_mode=fragment in the fragment', async () => {
    const browser = await signedIn();
    const location = await approve(
      browser,
      await consent(browser, authorizeFor({ response_mode: 'fragment' })),
    );
    expect(location).toMatch(/^http:\/\/127\.0\.0\.1:3000\/auth\/callback#code=[0-9a-f]{64}&state=xyz$/);
  });
});

describe('refresh tokens', () => {
  it('rotates as current GitLab: the old pair dies at once', async () => {
    const old = mint();
    const res = await refresh(old.refresh_token);
    expect(res.status).toBe(200);
    const fresh = (await res.json()) as TokenSet;
    expect(fresh.access_token).not.toBe(old.access_token);
    expect(fresh.refresh_token).not.toBe(old.refresh_token);
    expect(fresh.expires_in).toBe(7200);
    expect(fresh.scope).toBe(old.scope);

    expect((await tokenInfo(fresh.access_token)).status).toBe(200);
    expect((await userinfo(fresh.access_token)).status).toBe(200);
    const oldInfo = await tokenInfo(old.access_token);
    expect(oldInfo.status).toBe(401);
    // `Oauth::TokenInfoController` builds `InvalidTokenResponse.new` without a reason.
    expect(((await oldInfo.json()) as { error_description: string }).error_description).toBe(
      'The access token is invalid',
    );
    expect((await userinfo(old.access_token)).status).toBe(401);
    await expectTokenError(await refresh(old.refresh_token), 400, 'invalid_grant', INVALID_GRANT);
    // No family revocation: the newest pair still works.
    expect((await refresh(fresh.refresh_token)).status).toBe(200);
  });

  it('rotates on first use of the new access token in on-first-use mode (older GitLab)', async () => {
    gitlab.control.setBehaviour({ refreshTokenRotation: 'on-first-use' });
    const old = mint();
    const first = (await (await refresh(old.refresh_token)).json()) as TokenSet;
    // A retry after a lost response still works…
    const retry = await refresh(old.refresh_token);
    expect(retry.status).toBe(200);
    const second = (await retry.json()) as TokenSet;
    // …until the new access token is used.
    expect((await userinfo(second.access_token)).status).toBe(200);
    await expectTokenError(await refresh(old.refresh_token), 400, 'invalid_grant', INVALID_GRANT);
    expect((await tokenInfo(first.access_token)).status).toBe(200);
  });

  it('refuses a refresh without client credentials with invalid_grant, not invalid_client', async () => {
    const { refresh_token } = mint();
    await expectTokenError(await refresh(refresh_token, {}), 400, 'invalid_grant', INVALID_GRANT);
    await expectTokenError(
      await refresh(refresh_token, { client_id: app.uid, client_secret: 'wrong' }),
      401,
      'invalid_client',
      INVALID_CLIENT,
    );
    await expectTokenError(
      await refresh(refresh_token, { client_id: publicApp.uid }),
      400,
      'invalid_grant',
      INVALID_GRANT,
    );
    // None of those failures used the token up.
    expect((await refresh(refresh_token)).status).toBe(200);
  });

  it('lets a public app refresh with its client id only', async () => {
    const { refresh_token } = mint('alice', ['openid', 'read_user'], publicApp.uid);
    expect((await refresh(refresh_token, { client_id: publicApp.uid })).status).toBe(200);
  });

  it('narrows the scope on request and refuses a broader one', async () => {
    const { refresh_token } = mint('alice', ['openid', 'read_user']);
    await expectTokenError(
      await refresh(refresh_token, { ...clientPost(), scope: 'openid read_user read_api' }),
      400,
      'invalid_scope',
      INVALID_SCOPE,
    );
    const narrowed = await refresh(refresh_token, { ...clientPost(), scope: 'read_user' });
    expect(narrowed.status).toBe(200);
    const body = (await narrowed.json()) as TokenSet;
    expect(body.scope).toBe('read_user');
    expect(body.id_token).toBeUndefined();
  });

  it('issues an ID token without nonce on refresh', async () => {
    const { tokens } = await codeFlow(gitlab, { nonce: 'the-nonce' });
    expect(jwtPayload(tokens.id_token!)['nonce']).toBe('the-nonce');
    const refreshed = (await (await refresh(tokens.refresh_token)).json()) as TokenSet;
    const claims = jwtPayload(refreshed.id_token!);
    expect(claims['sub']).toBe('1');
    expect('nonce' in claims).toBe(false);
  });
});

describe('token endpoint errors', () => {
  it.each([
    ['no grant_type', {}, 400, 'invalid_request', 'Missing required parameter: grant_type.'],
    [
      'an unknown grant_type',
      { grant_type: 'implicit' },
      400,
      'unsupported_grant_type',
      'The authorization grant type is not supported by the authorization server.',
    ],
    [
      'client_credentials',
      { grant_type: 'client_credentials' },
      401,
      'unauthorized_client',
      UNAUTHORIZED_CLIENT,
    ],
    [
      'no code',
      { grant_type: 'authorization_code' },
      400,
      'invalid_request',
      'Missing required parameter: code.',
    ],
    [
      'no refresh_token',
      { grant_type: 'refresh_token' },
      400,
      'invalid_request',
      'Missing required parameter: refresh_token.',
    ],
    [
      'an unknown code',
      { grant_type: 'authorization_code', code: 'a'.repeat(64), redirect_uri: CALLBACK },
      400,
      'invalid_grant',
      INVALID_GRANT,
    ],
  ] as const)('answers %s', async (_, fields, status, error, description) => {
    await expectTokenError(await redeem({ ...fields, ...clientPost() }), status, error, description);
  });
});

describe('revocation, token info and introspection', () => {
  const revoke = (fields: Record<string, string | undefined>, headers: Record<string, string> = {}) =>
    postForm(`${gitlab.url}/oauth/revoke`, fields, headers);

  it('revokes the whole row whichever token is revoked', async () => {
    const a = mint();
    const res = await revoke({ token: a.access_token, ...clientPost() });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('{}');
    await expectTokenError(await refresh(a.refresh_token), 400, 'invalid_grant', INVALID_GRANT);

    const b = mint();
    expect(
      (
        await revoke(
          { token: b.refresh_token, token_type_hint: 'refresh_token' },
          { authorization: basic(app.uid, app.secret) },
        )
      ).status,
    ).toBe(200);
    expect((await tokenInfo(b.access_token)).status).toBe(401);
  });

  it('answers 200 {} for an unknown token', async () => {
    const res = await revoke({ token: 'f'.repeat(64), ...clientPost() });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({});
  });

  it('refuses to revoke a confidential app token without that client', async () => {
    const { access_token } = mint();
    for (const credentials of [
      {},
      { client_id: publicApp.uid },
      { client_id: app.uid, client_secret: 'x' },
    ]) {
      const res = await revoke({ token: access_token, ...credentials });
      expect(res.status).toBe(403);
      expect(await res.text()).toBe(
        '{"error":"unauthorized_client","error_description":"You are not authorized to revoke this token"}',
      );
    }
    expect((await tokenInfo(access_token)).status).toBe(200);
  });

  it('revokes a public app token without client authentication (self-managed default)', async () => {
    const { access_token } = mint('alice', ['openid'], publicApp.uid);
    expect((await revoke({ token: access_token })).status).toBe(200);
    expect((await tokenInfo(access_token)).status).toBe(401);
  });

  it('describes a token at /oauth/token/info', async () => {
    const { access_token, created_at } = mint('alice', ['openid', 'read_user']);
    gitlab.control.advanceClock(100);
    const res = await tokenInfo(access_token);
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(Object.keys(body)).toEqual([
      'resource_owner_id',
      'scope',
      'expires_in',
      'application',
      'created_at',
      'scopes',
      'expires_in_seconds',
    ]);
    expect(body).toMatchObject({
      resource_owner_id: 1,
      scope: ['openid', 'read_user'],
      application: { uid: app.uid },
      created_at,
      scopes: ['openid', 'read_user'],
    });
    expect(body['expires_in']).toBeGreaterThanOrEqual(7099);
    expect(body['expires_in']).toBeLessThanOrEqual(7100);
    expect(body['expires_in_seconds']).toBe(body['expires_in']);

    const viaQuery = await fetch(`${gitlab.url}/oauth/token/info?access_token=${access_token}`);
    expect(viaQuery.status).toBe(200);
  });

  it('answers 401 invalid_token at /oauth/token/info for expired and unknown tokens', async () => {
    const { access_token } = mint();
    gitlab.control.advanceClock(7201);
    const expired = await tokenInfo(access_token);
    expect(expired.status).toBe(401);
    // `InvalidTokenResponse.new` has no reason, so an expired token is "invalid" here, not "expired".
    const description = 'The access token is invalid';
    expect(await expired.text()).toBe(
      `{"error":"invalid_token","error_description":"${description}","state":"unauthorized"}`,
    );
    // `ErrorResponse#headers`: no-store, no-cache and the challenge, no Pragma.
    expect(expired.headers.get('cache-control')).toBe('no-store, no-cache');
    expect(expired.headers.get('pragma')).toBeNull();
    expect(expired.headers.get('www-authenticate')).toBe(
      `Bearer realm="Doorkeeper", error="invalid_token", error_description="${description}"`,
    );
    const unknown = await fetch(`${gitlab.url}/oauth/token/info`);
    expect(unknown.status).toBe(401);
    expect(await unknown.json()).toEqual({
      error: 'invalid_token',
      error_description: 'The access token is invalid',
      state: 'unauthorized',
    });
  });

  it('introspects tokens of the calling application only', async () => {
    const introspect = (token: string, auth = basic(app.uid, app.secret)) =>
      postForm(`${gitlab.url}/oauth/introspect`, { token }, { authorization: auth });
    const own = mint('alice', ['openid', 'read_user']);
    const res = await introspect(own.access_token);
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toEqual({
      active: true,
      scope: 'openid read_user',
      client_id: app.uid,
      token_type: 'Bearer',
      exp: own.created_at + 7200,
      iat: own.created_at,
    });

    const foreign = mint('alice', ['openid'], publicApp.uid);
    expect(await (await introspect(foreign.access_token)).json()).toEqual({ active: false });
    expect(await (await introspect('f'.repeat(64))).json()).toEqual({ active: false });
    await revoke({ token: own.access_token, ...clientPost() });
    expect(await (await introspect(own.access_token)).json()).toEqual({ active: false });

    const badClient = await introspect(foreign.access_token, basic(app.uid, 'wrong'));
    expect(badClient.status).toBe(401);
  });
});

describe('faults and the request log', () => {
  it('answers an injected 500 once, then normally', async () => {
    const { refresh_token } = mint();
    gitlab.control.injectFault({ path: '/oauth/token', status: 500, times: 1 });
    const failed = await refresh(refresh_token);
    expect(failed.status).toBe(500);
    expect(failed.headers.get('content-type')).toMatch(/^text\/html/);
    // The fault answered before the endpoint ran: the token is not used up.
    expect((await refresh(refresh_token)).status).toBe(200);
  });

  it('drops the connection', async () => {
    gitlab.control.injectFault({ path: '/oauth/token', drop: true });
    await expect(refresh(mint().refresh_token)).rejects.toThrow();
    gitlab.control.clearFaults();
    expect((await refresh(mint().refresh_token)).status).toBe(200);
  });

  it('delays the real answer', async () => {
    gitlab.control.injectFault({ path: '/oauth/token', delayMs: 300, times: 1 });
    const started = performance.now();
    const res = await refresh(mint().refresh_token);
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    expect(res.status).toBe(200);
  });

  it("answers 429 with Retry-After and Rack::Attack's plain-text body", async () => {
    gitlab.control.injectFault({ path: '/oauth/token', status: 429, retryAfter: 30, times: 1 });
    const res = await refresh(mint().refresh_token);
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('30');
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    expect((await res.text()).trim()).toBe('Retry later');
  });

  it('logs token-endpoint calls by grant type, without secrets', async () => {
    const { tokens } = await codeFlow(gitlab);
    const second = (await (await refresh(tokens.refresh_token)).json()) as TokenSet;
    await refresh(second.refresh_token);
    await redeem({ grant_type: 'client_credentials', ...clientPost() });
    expect(gitlab.control.requests({ path: '/oauth/token', grantType: 'authorization_code' })).toHaveLength(
      1,
    );
    const refreshes = gitlab.control.requests({ path: '/oauth/token', grantType: 'refresh_token' });
    expect(refreshes.map((e) => e.status)).toEqual([200, 200]);
    expect(refreshes.every((e) => e.method === 'POST' && e.clientId === app.uid)).toBe(true);
    expect(gitlab.control.requests({ path: '/oauth/token' })).toHaveLength(4);
    const log = JSON.stringify(gitlab.control.requests());
    for (const secret of [tokens.access_token, tokens.refresh_token, second.refresh_token, app.secret]) {
      expect(log).not.toContain(secret);
    }
  });
});

describe('relative URL root (/gitlab)', () => {
  let rooted: RunningEmulator;
  beforeAll(async () => {
    rooted = await startEmulator({ basePath: '/gitlab' });
  });
  afterAll(() => rooted.close());

  it('puts /gitlab in the issuer and every discovery URL', async () => {
    expect(rooted.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/gitlab$/);
    const doc = (await (await fetch(`${rooted.url}/.well-known/openid-configuration`)).json()) as Record<
      string,
      unknown
    >;
    expect(doc['issuer']).toBe(rooted.url);
    for (const [key, path] of [
      ['authorization_endpoint', '/oauth/authorize'],
      ['token_endpoint', '/oauth/token'],
      ['revocation_endpoint', '/oauth/revoke'],
      ['introspection_endpoint', '/oauth/introspect'],
      ['userinfo_endpoint', '/oauth/userinfo'],
      ['jwks_uri', '/oauth/discovery/keys'],
    ]) {
      expect(doc[key!]).toBe(`${rooted.url}${path}`);
    }
  });

  it('signs in under /gitlab and completes a flow there', async () => {
    const a = rooted.applications[0]!;
    const browser = new Browser();
    const first = await browser.get(
      authorizeUrl(rooted.url, {
        client_id: a.uid,
        redirect_uri: CALLBACK,
        response_type: 'code',
        scope: 'openid',
      }),
    );
    expect(first.location).toBe(`${rooted.url}/users/sign_in`);
    expect(browser.jar.cookies('127.0.0.1').map((c) => c.path)).toEqual(['/gitlab']);
    const signInPage = await browser.get(first.location!);
    expect(formWith(signInPage, { field: 'user[login]' }).action).toBe(`${rooted.url}/users/sign_in`);

    const { tokens } = await codeFlow(rooted, { browser });
    expect(jwtPayload(tokens.id_token!)['iss']).toBe(rooted.url);
    const info = await fetch(`${rooted.url}/oauth/userinfo`, {
      headers: { authorization: `Bearer ${tokens.access_token}` },
    });
    expect(info.status).toBe(200);
  });

  it('answers 404 outside /gitlab', async () => {
    const origin = new URL(rooted.url).origin;
    expect((await fetch(`${origin}/.well-known/openid-configuration`)).status).toBe(404);
    expect((await postForm(`${origin}/oauth/token`, { grant_type: 'refresh_token' })).status).toBe(404);
    expect((await fetch(`${origin}/oauth/authorize`, { redirect: 'manual' })).status).toBe(404);
  });
});

describe("Rails' params: query and body together, the query winning", () => {
  /** The consent page's Authorize form with some fields moved from the body into its action URL. */
  function moveToActionUrl(page: Page, names: string[]): { action: string; fields: Record<string, string> } {
    const form = formWith(page, { testId: 'authorization-button' });
    const action = new URL(form.action);
    const fields = { ...form.fields };
    for (const name of names) {
      if (fields[name] !== undefined) action.searchParams.set(name, fields[name]!);
      delete fields[name];
    }
    return { action: action.href, fields };
  }

  it('issues a code for a consent form posted with its fields in the action URL', async () => {
    const browser = await signedIn();
    const page = await consent(browser, authorizeFor({ state: 'in-the-url' }));
    const form = formWith(page, { testId: 'authorization-button' });
    const all = Object.keys(form.fields).filter((name) => name !== 'authenticity_token');
    expect(all).toEqual(expect.arrayContaining(['client_id', 'redirect_uri', 'response_type', 'scope']));
    const moved = moveToActionUrl(page, all);
    expect(Object.keys(moved.fields)).toEqual(['authenticity_token']);
    const answer = await browser.submit({ ...form, ...moved });
    expect(answer.status, answer.body).toBe(302);
    const params = callbackParams(answer.location!);
    expect(params['state']).toBe('in-the-url');
    const res = await redeem({
      grant_type: 'authorization_code',
      code: params['code'],
      redirect_uri: CALLBACK,
      ...clientPost(),
    });
    expect(res.status).toBe(200);
  });

  it('takes the CSRF token from the action URL too', async () => {
    const browser = await signedIn();
    const page = await consent(browser, authorizeFor());
    const form = formWith(page, { testId: 'authorization-button' });
    const answer = await browser.submit({ ...form, ...moveToActionUrl(page, Object.keys(form.fields)) });
    expect(answer.status).toBe(302);
    expect(callbackParams(answer.location!)['code']).toMatch(/^[0-9a-f]{64}$/);
  });

  it('lets a name in the query win over the same name in the body', async () => {
    const browser = await signedIn();
    const page = await consent(browser, authorizeFor({ state: 'from-body' }));
    const form = formWith(page, { testId: 'authorization-button' });
    const withState = new URL(form.action);
    withState.searchParams.set('state', 'from-query');
    const answer = await browser.submit({ ...form, action: withState.href });
    expect(answer.status).toBe(302);
    expect(callbackParams(answer.location!)['state']).toBe('from-query');

    // A wrong client_id in the query overrides the right one in the body.
    const again = await consent(browser, authorizeFor());
    const againForm = formWith(again, { testId: 'authorization-button' });
    const wrongClient = new URL(againForm.action);
    wrongClient.searchParams.set('client_id', 'f'.repeat(64));
    const refused = await browser.submit({ ...againForm, action: wrongClient.href });
    expect(refused.status).toBe(200);
    expect(errorPageDescription(refused)).toBe(INVALID_CLIENT);
  });

  it('reads token-endpoint parameters from the query as well', async () => {
    const { refresh_token } = mint();
    const url = new URL(tokenUrl());
    url.searchParams.set('grant_type', 'refresh_token');
    url.searchParams.set('refresh_token', refresh_token);
    const res = await postForm(url.href, clientPost());
    expect(res.status).toBe(200);
    // The query's grant type wins over the body's.
    const other = mint();
    const conflicting = new URL(tokenUrl());
    conflicting.searchParams.set('grant_type', 'refresh_token');
    const refreshed = await postForm(conflicting.href, {
      grant_type: 'password',
      refresh_token: other.refresh_token,
      ...clientPost(),
    });
    expect(refreshed.status).toBe(200);
  });
});

describe('cache headers of the dynamic-application PKCE refusal', () => {
  it("answers GitLab's own 400 without Doorkeeper's cache headers", async () => {
    const fixtures = demoFixtures();
    fixtures.applications![1]!.dynamic = true;
    const dynamicGitlab = await startEmulator({ fixtures });
    try {
      const dynamicApp = dynamicGitlab.applications[1]!;
      const res = await postForm(`${dynamicGitlab.url}/oauth/token`, {
        grant_type: 'authorization_code',
        code: 'a'.repeat(64),
        redirect_uri: PUBLIC_CALLBACK,
        client_id: dynamicApp.uid,
      });
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({
        error: 'invalid_request',
        error_description: 'PKCE code_verifier is required for dynamic OAuth applications',
      });
      // `Oauth::TokensController#validate_pkce_for_dynamic_applications` renders before Doorkeeper
      // sets any header.
      expect(res.headers.get('cache-control')).toBeNull();
      expect(res.headers.get('pragma')).toBeNull();
      expect(res.headers.get('www-authenticate')).toBeNull();
    } finally {
      await dynamicGitlab.close();
    }
  });
});
