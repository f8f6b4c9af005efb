/**
 * Logs cannot be forged (docs/security.md, LOG-1): everything a client or GitLab chose that reaches a log
 * line — parameter names, paths, header values, GitLab's error descriptions — goes through one helper
 * that escapes control characters and bounds the length, and every line labgate logs is one line.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createLabgate } from '../../src/core/index.js';
import { LOG_VALUE_MAX, logText, safeLogger } from '../../src/core/log.js';
import { type RunningEmulator, startEmulator } from '../../src/emulator/index.js';
import { APP, authorize, CALLBACK, createHarness, type Harness, login, rewriteJson } from './harness.js';

const FORGED = 'FAKE labgate: admin signed in';

/** No log line holds a control character, and none starts with the forged text. */
function expectOneLineEach(logs: string[]): void {
  expect(logs.length).toBeGreaterThan(0);
  for (const line of logs) {
    // biome-ignore lint/suspicious/noControlCharactersInRegex: looking for control characters is the point
    expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/);
    expect(line.replace(/^(info|warn|error) /, '').startsWith('FAKE')).toBe(false);
  }
}

describe('logText', () => {
  it('escapes control characters, line separators and bidi overrides, and doubles backslashes', () => {
    expect(logText(`a\nb\rc\td\u0000e\u001bf\u007fg\u0085h\u2028i\u202ej`)).toBe(
      'a\\nb\\rc\\td\\x00e\\x1bf\\x7fg\\x85h\\u2028i\\u202ej',
    );
    // A backslash the client typed cannot pass for an escape labgate wrote.
    expect(logText('x\\ny')).toBe('x\\\\ny');
    expect(logText('plain text, ünïcödé')).toBe('plain text, ünïcödé');
  });

  it('bounds the length, and says where it cut', () => {
    expect(logText('a'.repeat(10_000))).toBe(`${'a'.repeat(LOG_VALUE_MAX)}…`);
    expect(logText('abcdef', 3)).toBe('abc…');
    expect(logText(42)).toBe('42');
  });

  it('makes a logger whose every line is one line', () => {
    const lines: string[] = [];
    const logger = safeLogger({
      info: (m) => lines.push(m),
      warn: (m) => lines.push(m),
      error: (m) => lines.push(m),
    });
    logger.info(`one\n${FORGED}`);
    logger.warn('x'.repeat(5000));
    logger.error('\u001b[2Jcleared');
    expect(lines[0]).toBe(`one\\n${FORGED}`);
    expect(lines[1]!.length).toBeLessThan(2100);
    expect(lines[2]).toBe('\\x1b[2Jcleared');
  });

  it('is the logger every labgate instance writes through', () => {
    const lines: string[] = [];
    createLabgate({
      gitlabUrl: 'http://127.0.0.1:9',
      clientId: 'log',
      url: APP,
      secret: randomBytes(32).toString('base64url'),
      logger: { info: (m) => lines.push(m), warn: (m) => lines.push(m), error: (m) => lines.push(m) },
    });
    // The http:// GitLab warning is written through it.
    expect(lines.length).toBeGreaterThan(0);
    expectOneLineEach(lines);
  });
});

describe('each source of client text', () => {
  let gitlab: RunningEmulator;
  let h: Harness;
  beforeAll(async () => {
    gitlab = await startEmulator();
  });
  afterAll(() => gitlab.close());
  beforeEach(() => {
    gitlab.control.reset();
    h = createHarness(gitlab);
  });

  it('a callback parameter name holding a newline', async () => {
    const response = await h.fetch(`${CALLBACK}?code=a&state=b&x%0A${encodeURIComponent(FORGED)}=1`);
    expect(response.status).toBe(400);
    expectOneLineEach(h.logs);
    expect(h.logs.some((l) => l.includes(`x\\n${FORGED}`))).toBe(true);
  });

  it('a callback parameter value holding control characters', async () => {
    await h.fetch(`${CALLBACK}?code=a&state=b&error_description=x%0D%0A${encodeURIComponent(FORGED)}`);
    expectOneLineEach(h.logs);
  });

  it("GitLab's error code on the callback, bounded", async () => {
    await h.fetch(`${CALLBACK}?state=b&error=${'e'.repeat(500)}%E2%80%A8${encodeURIComponent(FORGED)}`);
    expectOneLineEach(h.logs);
    expect(h.logs.every((l) => l.length < 1000)).toBe(true);
  });

  it('a path', async () => {
    await h.fetch(`${APP}/auth/x%0A${encodeURIComponent(FORGED)}`);
    await h.fetch(`${APP}/auth/${'p'.repeat(5000)}`);
    expectOneLineEach(h.logs);
    expect(h.logs.every((l) => l.length < 1000)).toBe(true);
  });

  it("GitLab's error description and a header value GitLab chose", async () => {
    const hostile = createHarness(gitlab, {
      intercept: async (url, response) => {
        if (!url.endsWith('/oauth/token')) return response;
        await response.body?.cancel();
        return new Response(
          JSON.stringify({ error: `invalid_grant\n${FORGED}`, error_description: `no\n${FORGED}` }),
          { status: 400, headers: { 'content-type': 'application/json', 'x-note': '\u001b[2J' } },
        );
      },
    });
    const browser = hostile.browser();
    const { authorizeUrl } = await login(hostile, browser);
    const back = await browser.get(await authorize(hostile, browser, authorizeUrl.href));
    expect(back.status).toBe(400);
    expectOneLineEach(hostile.logs);
  });

  it('a Content-Type GitLab chose, on an answer that is refused for it', async () => {
    const hostile = createHarness(gitlab, {
      intercept: async (url, response) =>
        url.endsWith('/oauth/token')
          ? new Response(await response.text(), {
              status: 200,
              headers: { 'content-type': `text/html\u001b[2J${'x'.repeat(3000)}` },
            })
          : response,
    });
    const browser = hostile.browser();
    const { authorizeUrl } = await login(hostile, browser);
    const back = await browser.get(await authorize(hostile, browser, authorizeUrl.href));
    expect(back.status).toBe(502);
    expectOneLineEach(hostile.logs);
    expect(hostile.logs.every((l) => l.length < 2100)).toBe(true);
  });

  it('a username GitLab chose, in the sign-in line', async () => {
    const hostile = createHarness(gitlab, {
      intercept: async (url, response) =>
        url.endsWith('/oauth/userinfo') || url.endsWith('/api/v4/user')
          ? rewriteJson(response, (body) => ({
              ...body,
              ...('nickname' in body ? { nickname: `alice\n${FORGED}` } : { username: `alice\n${FORGED}` }),
            }))
          : response,
    });
    const browser = hostile.browser();
    const { authorizeUrl } = await login(hostile, browser);
    await browser.get(await authorize(hostile, browser, authorizeUrl.href));
    expectOneLineEach(hostile.logs);
  });
});
