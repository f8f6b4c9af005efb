/**
 * `labgate doctor --signin` (src/cli/signin-probe.ts, docs/doctor.md#signin-redirect-uri) against the
 * emulator on loopback: scripted sign-ins through GitLab's own forms report exactly what GitLab
 * answered for the redirect URI, the scopes, the password and the policy's groups and projects, and
 * leave no token behind; interactive sign-ins catch the callback on a loopback redirect URI or take
 * what the user pastes, with this test playing the user's browser.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CheckResult } from '../../src/cli/report.js';
import { type SignInProbeInput, signInProbe } from '../../src/cli/signin-probe.js';
import { demoFixtures, type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { DESCRIPTIONS } from '../../src/emulator/oauth.js';
import { Browser, errorPageDescription } from '../emulator/browser.js';

// GitLab's texts, as its error page writes them (the emulator's copy is compared below).
const INVALID_REDIRECT_URI = 'The redirect URI included is not valid.';
const INVALID_SCOPE = 'The requested scope is invalid, unknown, or malformed.';
const INVALID_CLIENT =
  'Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.';

const CALLBACK = 'http://127.0.0.1:3000/auth/callback';
const SCOPES = ['openid', 'profile', 'email', 'read_api'];
const ALICE = { login: 'alice', password: 'alice-password' };

const TRUSTED = {
  name: 'probe trusted',
  clientId: 'trusted-probe-client',
  clientSecret: 'gloas-trusted-probe-secret',
  redirectUris: ['http://127.0.0.1/auth/callback'],
  scopes: SCOPES,
  confidential: true,
  trusted: true,
};
const HOSTED = {
  name: 'probe hosted',
  clientId: 'hosted-probe-client',
  clientSecret: 'gloas-hosted-probe-secret',
  redirectUris: ['http://app.example.test/auth/callback'],
  scopes: SCOPES,
  confidential: true,
};

function fixtures() {
  const f = demoFixtures();
  f.applications = [...(f.applications ?? []), TRUSTED, HOSTED];
  return f;
}

let gitlab: RunningEmulator;
let demo: RunningEmulator['applications'][number];

beforeAll(async () => {
  gitlab = await startEmulator({ fixtures: fixtures() });
  demo = gitlab.applications[0]!;
});
afterAll(() => gitlab.close());
beforeEach(() => gitlab.control.reset());

/** A fetch that remembers the access tokens GitLab issued, to check that the probe revoked them. */
function recordingFetch() {
  const tokens: string[] = [];
  const recording: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.pathname.endsWith('/oauth/token') && res.status === 200) {
      const body = (await res.clone().json()) as { access_token: string };
      tokens.push(body.access_token);
    }
    return res;
  };
  return { fetch: recording, tokens };
}

function input(over: Partial<SignInProbeInput> = {}): SignInProbeInput & { lines: string[] } {
  const lines: string[] = [];
  return {
    gitlabUrl: gitlab.url,
    clientId: demo.uid,
    clientSecret: demo.secret,
    redirectUri: CALLBACK,
    scopes: SCOPES,
    allow: [],
    user: ALICE,
    print: (line) => lines.push(line),
    lines,
    ...over,
  };
}

function byId(results: CheckResult[], id: string): CheckResult {
  const found = results.find((r) => r.id === id);
  if (!found) throw new Error(`no result ${id} in ${JSON.stringify(results, null, 2)}`);
  return found;
}

const statuses = (results: CheckResult[]) => Object.fromEntries(results.map((r) => [r.id, r.status]));

async function tokenInfoStatus(url: string, token: string): Promise<number> {
  const res = await fetch(`${url}/oauth/token/info`, { headers: { authorization: `Bearer ${token}` } });
  await res.body?.cancel();
  return res.status;
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

describe('GitLab’s texts', () => {
  it('are the emulator’s, word for word', () => {
    expect(DESCRIPTIONS.invalid_redirect_uri).toBe(INVALID_REDIRECT_URI);
    expect(DESCRIPTIONS.invalid_scope).toBe(INVALID_SCOPE);
    expect(DESCRIPTIONS.invalid_client).toBe(INVALID_CLIENT);
  });
});

describe('a scripted sign-in with a correct setup', () => {
  it('reports every check ✓ through the consent page, and revokes its token', async () => {
    const recorder = recordingFetch();
    const results = await signInProbe(
      input({
        fetch: recorder.fetch,
        allow: [
          'group:acme/platform>=developer',
          'group-exact:acme',
          'project:acme/app',
          'user:bob',
          'email:@acme.com',
        ],
      }),
    );
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'ok',
      'signin-scopes': 'ok',
      'signin-user': 'ok',
      'policy-group-acme/platform': 'ok',
      'policy-group-exact-acme': 'ok',
      'policy-project-acme/app': 'ok',
    });
    expect(byId(results, 'signin-redirect-uri').detail).toContain(CALLBACK);
    expect(byId(results, 'signin-scopes').detail).toBe('Granted: openid profile email read_api');
    const user = byId(results, 'signin-user');
    expect(user.detail).toContain('Signed in as @alice (Alice');
    expect(user.detail).toContain("The probe's token has been revoked.");
    expect(byId(results, 'policy-project-acme/app').detail).toContain('acme/app: visible to @alice');
    for (const result of results) expect(result.docs).toMatch(/^docs\/doctor\.md#/);

    // The consent page was approved, the code exchanged once, the token revoked and now refused.
    expect(gitlab.control.requests({ path: '/oauth/authorize', method: 'POST' })).toHaveLength(1);
    expect(gitlab.control.requests({ path: '/oauth/token' }).map((r) => r.status)).toEqual([200]);
    expect(gitlab.control.requests({ path: '/oauth/revoke' }).map((r) => r.status)).toEqual([200]);
    expect(recorder.tokens).toHaveLength(1);
    expect(await tokenInfoStatus(gitlab.url, recorder.tokens[0]!)).toBe(401);
    expect(gitlab.control.revokeUserTokens('alice')).toBe(0);

    // Nothing secret reaches the report.
    const text = JSON.stringify(results);
    expect(text).not.toContain(demo.secret);
    expect(text).not.toContain(recorder.tokens[0]!);
  });

  it('follows GitLab’s “Redirecting” page for an application GitLab approves without asking', async () => {
    const results = await signInProbe(
      input({
        clientId: TRUSTED.clientId,
        clientSecret: TRUSTED.clientSecret,
        redirectUri: 'http://127.0.0.1:8000/auth/callback',
      }),
    );
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'ok',
      'signin-scopes': 'ok',
      'signin-user': 'ok',
    });
    // Approved without a consent form.
    expect(gitlab.control.requests({ path: '/oauth/authorize', method: 'POST' })).toHaveLength(0);
    expect(gitlab.control.requests({ path: '/oauth/revoke' }).map((r) => r.status)).toEqual([200]);
  });

  it('works with GitLab under a sub-path, and with a plain redirect for approval', async () => {
    const sub = await startEmulator({ basePath: '/gitlab', fixtures: fixtures(), autoApprove: 'redirect' });
    try {
      const recorder = recordingFetch();
      const results = await signInProbe(
        input({
          gitlabUrl: `${sub.url}/`,
          clientId: TRUSTED.clientId,
          clientSecret: TRUSTED.clientSecret,
          allow: ['group:acme/platform'],
          fetch: recorder.fetch,
        }),
      );
      expect(sub.url).toMatch(/\/gitlab$/);
      expect(statuses(results)).toEqual({
        'signin-redirect-uri': 'ok',
        'signin-scopes': 'ok',
        'signin-user': 'ok',
        'policy-group-acme/platform': 'ok',
      });
      expect(await tokenInfoStatus(sub.url, recorder.tokens[0]!)).toBe(401);
    } finally {
      await sub.close();
    }
  });

  it('signs in for a registered non-loopback URI without ever contacting it', async () => {
    const results = await signInProbe(
      input({
        clientId: HOSTED.clientId,
        clientSecret: HOSTED.clientSecret,
        redirectUri: 'http://app.example.test/auth/callback',
      }),
    );
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'ok',
      'signin-scopes': 'ok',
      'signin-user': 'ok',
    });
  });
});

describe('an unregistered redirect URI', () => {
  const cases: [string, string, Partial<SignInProbeInput>, string][] = [
    ['a trailing slash added', `${CALLBACK}/`, {}, 'the trailing slash'],
    ['https instead of http', 'https://127.0.0.1:3000/auth/callback', {}, 'http and https never match'],
    [
      'a port the registered URI does not have (non-loopback host)',
      'http://app.example.test:8080/auth/callback',
      { clientId: HOSTED.clientId, clientSecret: HOSTED.clientSecret },
      'is it registered without :8080',
    ],
    [
      'localhost for 127.0.0.1',
      'http://localhost:3999/auth/callback',
      {},
      'GitLab tells localhost and 127.0.0.1 apart',
    ],
    ['another path', 'http://127.0.0.1:3000/callback', {}, "labgate's callback is LABGATE_URL/auth/callback"],
  ];
  it.each(cases)(
    '%s: ✗ with GitLab’s exact text, the URI sent and the likely cause',
    async (_, uri, over, cause) => {
      const results = await signInProbe(input({ redirectUri: uri, allow: ['group:acme'], ...over }));
      expect(statuses(results)).toEqual({
        'signin-redirect-uri': 'fail',
        'signin-scopes': 'skip',
        'signin-user': 'skip',
        'policy-group-acme': 'skip',
      });
      const result = byId(results, 'signin-redirect-uri');
      expect(result.detail).toContain(`GitLab answered: “${INVALID_REDIRECT_URI}”`);
      expect(result.detail).toContain(`redirect URI ${uri} `);
      expect(result.fix).toContain(`Register exactly ${uri} `);
      expect(result.fix).toContain(cause);
      // GitLab stopped at its error page: no code, no token.
      expect(gitlab.control.requests({ path: '/oauth/token' })).toHaveLength(0);
    },
  );
});

describe('scopes', () => {
  it('one the application does not have: ✓ redirect URI, ✗ scopes with GitLab’s exact text', async () => {
    const results = await signInProbe(input({ scopes: ['openid', 'profile', 'email', 'api'] }));
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'ok',
      'signin-scopes': 'fail',
      'signin-user': 'skip',
    });
    const scopes = byId(results, 'signin-scopes');
    expect(scopes.detail).toContain(`GitLab answered: “${INVALID_SCOPE}”`);
    expect(scopes.detail).toContain('Asked for: openid profile email api');
    expect(scopes.fix).toContain('GITLAB_SCOPES');
    expect(gitlab.control.requests({ path: '/oauth/token' })).toHaveLength(0);
  });

  it('one this GitLab does not know, or a comma list, is named in the fix', async () => {
    const results = await signInProbe(input({ scopes: ['openid,profile', 'nonsense'] }));
    const scopes = byId(results, 'signin-scopes');
    expect(scopes.status).toBe('fail');
    expect(scopes.fix).toContain('This GitLab does not offer "openid,profile", "nonsense" at all.');
    expect(scopes.fix).toContain('never commas');
  });

  it('without read_api the policy’s groups are ⚠ not checked', async () => {
    const results = await signInProbe(
      input({ scopes: ['openid', 'profile', 'email'], allow: ['group:acme'] }),
    );
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'ok',
      'signin-scopes': 'ok',
      'signin-user': 'ok',
      'policy-group-acme': 'warn',
    });
    expect(byId(results, 'policy-group-acme').fix).toContain('read_api');
    expect(gitlab.control.requests({ path: '/api/v4/groups/acme' })).toHaveLength(0);
  });
});

describe('the sign-in itself', () => {
  it('a wrong password: ✗ saying GitLab refused the sign-in, and why', async () => {
    const results = await signInProbe(
      input({ user: { login: 'alice', password: 'wrong' }, allow: ['group:acme'] }),
    );
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'skip',
      'signin-scopes': 'skip',
      'signin-user': 'fail',
      'policy-group-acme': 'skip',
    });
    const user = byId(results, 'signin-user');
    expect(user.detail).toBe('GitLab refused the sign-in of alice: Invalid login or password.');
    expect(user.fix).toContain('LABGATE_DOCTOR_PASSWORD');
    expect(gitlab.control.requests({ path: '/users/sign_in', method: 'POST' })).toHaveLength(1);
  });

  it('a user with two-factor authentication: ✗ saying a scripted sign-in cannot give the code', async () => {
    const results = await signInProbe(input({ user: { login: 'carol', password: 'carol-password' } }));
    expect(byId(results, 'signin-user').status).toBe('fail');
    expect(byId(results, 'signin-user').detail).toContain('carol has two-factor authentication');
  });

  it('an unknown client id: ✗ with GitLab’s exact text', async () => {
    const results = await signInProbe(input({ clientId: 'no-such-application' }));
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'skip',
      'signin-scopes': 'skip',
      'signin-user': 'fail',
    });
    expect(byId(results, 'signin-user').detail).toBe(`GitLab answered: “${INVALID_CLIENT}”`);
    expect(byId(results, 'signin-user').fix).toContain('GITLAB_CLIENT_ID');
  });

  it('a wrong client secret: ✓ redirect URI, ✗ at the code exchange with GitLab’s answer', async () => {
    const results = await signInProbe(input({ clientSecret: 'gloas-wrong' }));
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'ok',
      'signin-scopes': 'skip',
      'signin-user': 'fail',
    });
    const user = byId(results, 'signin-user');
    expect(user.detail).toContain('The code exchange failed: GitLab answered 401: “invalid_client”');
    expect(user.detail).toContain(INVALID_CLIENT);
    expect(user.fix).toContain('GITLAB_CLIENT_SECRET');
    expect(JSON.stringify(results)).not.toContain('gloas-wrong');
  });

  it('GitLab not answering: ✗ saying so, without a sign-in', async () => {
    const port = await freePort();
    const results = await signInProbe(
      input({ gitlabUrl: `http://127.0.0.1:${port}`, allow: ['group:acme'] }),
    );
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'fail',
      'signin-scopes': 'skip',
      'signin-user': 'skip',
      'policy-group-acme': 'skip',
    });
    expect(byId(results, 'signin-redirect-uri').detail).toContain('GitLab did not answer');
  });
});

describe('the policy’s groups and projects', () => {
  it('✗ for a group that does not exist and a project the user cannot see; ✓ for a public one', async () => {
    const results = await signInProbe(
      input({
        allow: [
          'group:acme/nope',
          'project:partners/portal>=developer',
          'group:opensource',
          'group:acme/nope>=owner',
        ],
      }),
    );
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'ok',
      'signin-scopes': 'ok',
      'signin-user': 'ok',
      'policy-group-acme/nope': 'fail',
      'policy-project-partners/portal': 'fail',
      'policy-group-opensource': 'ok',
    });
    const group = byId(results, 'policy-group-acme/nope');
    expect(group.detail).toContain('GitLab answered 404: “404 Group Not Found”');
    expect(group.detail).toContain('not visible to @alice');
    expect(group.fix).toContain(`${gitlab.url}/acme/nope`);
    expect(byId(results, 'policy-project-partners/portal').detail).toContain('404 Project Not Found');
    // The same project is visible to its member: the probe asks as the signed-in user.
    const grace = await signInProbe(
      input({ user: { login: 'grace', password: 'grace-password' }, allow: ['project:partners/portal'] }),
    );
    expect(byId(grace, 'policy-project-partners/portal').status).toBe('ok');
    // Both probes revoked their tokens.
    expect(gitlab.control.requests({ path: '/oauth/revoke' }).map((r) => r.status)).toEqual([200, 200]);
  });

  it('checks id rules by id', async () => {
    const acme = gitlab.control.model().groups.find((g) => g.fullPath === 'acme')!;
    const results = await signInProbe(input({ allow: [`group-id:${acme.id}`, 'project-id:99999'] }));
    expect(byId(results, `policy-group-id-${acme.id}`).status).toBe('ok');
    expect(byId(results, `policy-group-id-${acme.id}`).detail).toContain('acme: visible to @alice');
    expect(byId(results, 'policy-project-id-99999').status).toBe('fail');
  });
});

describe('an interactive sign-in', () => {
  /** Resolves with the authorize link once the probe prints it. */
  function linkPrinted(): { print: (line: string) => void; link: Promise<string>; lines: string[] } {
    const lines: string[] = [];
    let found!: (link: string) => void;
    const link = new Promise<string>((resolve) => {
      found = resolve;
    });
    return {
      lines,
      link,
      print: (line) => {
        lines.push(line);
        const m = /https?:\/\/\S+\/oauth\/authorize\?\S+/.exec(line);
        if (m) found(m[0]);
      },
    };
  }

  /** A user who never types anything. */
  const silent = (signal: AbortSignal) =>
    new Promise<string | null>((resolve) =>
      signal.addEventListener('abort', () => resolve(null), { once: true }),
    );

  it('with a loopback redirect URI catches the browser’s callback on its port and path', async () => {
    const port = await freePort();
    const redirectUri = `http://127.0.0.1:${port}/auth/callback`;
    const printed = linkPrinted();
    const recorder = recordingFetch();
    const running = signInProbe(
      input({
        user: undefined,
        redirectUri,
        print: printed.print,
        readLine: silent,
        fetch: recorder.fetch,
        allow: ['group:acme'],
      }),
    );
    const link = await printed.link;
    expect(printed.lines.join('\n')).toContain(`for GitLab to send the browser to ${redirectUri}`);

    // The user's browser: signs in, approves, and lands on the redirect URI.
    const browser = new Browser();
    // Another sign-in's answer does not end the wait.
    const stray = await browser.get(`${redirectUri}?code=x&state=not-this-one`);
    expect(stray.status).toBe(400);
    const elsewhere = await browser.get(`http://127.0.0.1:${port}/other`);
    expect(elsewhere.status).toBe(404);
    const location = await browser.approveToClient({ url: gitlab.url, authorizeUrl: link, ...ALICE });
    expect(location.startsWith(`${redirectUri}?`)).toBe(true);
    const landed = await browser.get(location);
    expect(landed.status).toBe(200);
    expect(landed.body).toContain('You can close this tab');
    expect(landed.headers.get('cache-control')).toBe('no-store');

    const results = await running;
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'ok',
      'signin-scopes': 'ok',
      'signin-user': 'ok',
      'policy-group-acme': 'ok',
    });
    expect(await tokenInfoStatus(gitlab.url, recorder.tokens[0]!)).toBe(401);
    // The port is free again.
    const again: Server = createServer();
    again.listen(port, '127.0.0.1');
    await once(again, 'listening');
    again.close();
  });

  it('takes the address the user pastes when the redirect URI is not on this machine', async () => {
    const printed = linkPrinted();
    const browser = new Browser();
    const readLine = async () => {
      const link = await printed.link;
      return browser.approveToClient({ url: gitlab.url, authorizeUrl: link, ...ALICE });
    };
    const results = await signInProbe(
      input({
        user: undefined,
        clientId: HOSTED.clientId,
        clientSecret: HOSTED.clientSecret,
        redirectUri: 'http://app.example.test/auth/callback',
        print: printed.print,
        readLine,
      }),
    );
    expect(printed.lines.join('\n')).toContain('paste the address the browser lands on');
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'ok',
      'signin-scopes': 'ok',
      'signin-user': 'ok',
    });
  });

  it('takes GitLab’s error message when the user pastes it', async () => {
    const printed = linkPrinted();
    const readLine = async () => {
      const page = await new Browser().signInAndAuthorize({
        url: gitlab.url,
        authorizeUrl: await printed.link,
        ...ALICE,
      });
      return errorPageDescription(page.page);
    };
    const results = await signInProbe(
      input({
        user: undefined,
        clientId: HOSTED.clientId,
        clientSecret: HOSTED.clientSecret,
        redirectUri: 'http://app.example.test:8080/auth/callback',
        print: printed.print,
        readLine,
      }),
    );
    expect(byId(results, 'signin-redirect-uri').status).toBe('fail');
    expect(byId(results, 'signin-redirect-uri').detail).toContain(
      `GitLab answered: “${INVALID_REDIRECT_URI}”`,
    );
  });

  it('falls back to pasting when the redirect URI’s port is taken', async () => {
    const busy = createServer((_req, res) => res.end('the app'));
    busy.listen(0, '127.0.0.1');
    await once(busy, 'listening');
    try {
      const { port } = busy.address() as AddressInfo;
      const printed = linkPrinted();
      const browser = new Browser();
      const readLine = async () =>
        browser.approveToClient({ url: gitlab.url, authorizeUrl: await printed.link, ...ALICE });
      const results = await signInProbe(
        input({
          user: undefined,
          redirectUri: `http://127.0.0.1:${port}/auth/callback`,
          print: printed.print,
          readLine,
        }),
      );
      expect(printed.lines.join('\n')).toContain(`Port ${port} is in use`);
      expect(statuses(results)).toEqual({
        'signin-redirect-uri': 'ok',
        'signin-scopes': 'ok',
        'signin-user': 'ok',
      });
    } finally {
      busy.close();
    }
  });

  it('gives up after timeoutMs when nobody comes back, and frees the port', async () => {
    const port = await freePort();
    const redirectUri = `http://127.0.0.1:${port}/auth/callback`;
    const results = await signInProbe(
      input({ user: undefined, redirectUri, readLine: silent, timeoutMs: 300 }),
    );
    expect(statuses(results)).toEqual({
      'signin-redirect-uri': 'skip',
      'signin-scopes': 'skip',
      'signin-user': 'fail',
    });
    expect(byId(results, 'signin-user').detail).toBe(
      `GitLab did not send the browser to ${redirectUri} within 300 ms.`,
    );
    expect(byId(results, 'signin-user').fix).toContain(INVALID_REDIRECT_URI);
    const again = createServer();
    again.listen(port, '127.0.0.1');
    await once(again, 'listening');
    again.close();
  });
});
