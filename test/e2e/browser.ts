/**
 * Real-browser helpers for the end-to-end tests: Debian's chromium driven by playwright-core (never a
 * browser that a tool downloads), with the flags below and a fresh profile each time; and the
 * RFC 6238 codes a two-factor user types.
 */
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium, type Page } from 'playwright-core';

/** Debian's chromium (`apt-get install chromium`). */
export const CHROMIUM_PATH = '/usr/bin/chromium';

/**
 * The flags every run uses, less the two playwright owns: `headless: true` adds `--headless`, and the
 * profile folder handed to `launchPersistentContext` becomes `--user-data-dir` (playwright refuses
 * the flag in `args`).
 */
export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Why the browser tests cannot run here, or null when they can. */
export const chromiumMissing: string | null = existsSync(CHROMIUM_PATH)
  ? null
  : `chromium not installed: apt-get install chromium (no ${CHROMIUM_PATH})`;

/**
 * Whether to skip the browser tests: only outside CI. In CI (`CI=true`) a missing browser is a
 * failure, reported by {@link launchChromium}, so a broken install cannot pass as green.
 */
export const skipBrowserTests: boolean = chromiumMissing !== null && process.env['CI'] !== 'true';

if (skipBrowserTests) process.stderr.write(`test/e2e: skipped, ${chromiumMissing}\n`);

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** A running chromium with one page, on a profile of its own. */
export interface RunningChromium {
  context: BrowserContext;
  page: Page;
  /** Requests the page tried to make off loopback (an avatar at Gravatar…), aborted: the tests stay offline. */
  blocked: string[];
  /** Closes the browser and deletes its profile. */
  close(): Promise<void>;
}

/**
 * Launches headless chromium on a fresh profile.
 * @example
 * ```ts
 * const browser = await launchChromium();
 * await browser.page.goto(origin);
 * await browser.close();
 * ```
 */
export async function launchChromium(options: { timeout?: number } = {}): Promise<RunningChromium> {
  if (chromiumMissing) throw new Error(chromiumMissing);
  const profile = await mkdtemp(join(tmpdir(), 'labgate-chromium-'));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: CHROMIUM_FLAGS,
      timeout: 30_000,
      viewport: { width: 1024, height: 768 },
      locale: 'en-GB',
      timezoneId: 'UTC',
    });
  } catch (error) {
    await rm(profile, { recursive: true, force: true });
    throw error;
  }
  // Bounded waits: a flow that stalls fails with the step it stalled on, well before Vitest's timeout.
  context.setDefaultTimeout(options.timeout ?? 10_000);
  context.setDefaultNavigationTimeout(options.timeout ?? 15_000);
  const blocked: string[] = [];
  await context.route(
    (url) => !LOOPBACK.has(url.hostname),
    (route) => {
      blocked.push(route.request().url());
      return route.abort('blockedbyclient');
    },
  );
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    blocked,
    async close() {
      await context.close().catch(() => undefined);
      await rm(profile, { recursive: true, force: true });
    },
  };
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(secret: string): Buffer {
  let bits = 0;
  let value = 0;
  const out: number[] = [];
  for (const char of secret.replace(/[\s=]/g, '').toUpperCase()) {
    const index = BASE32.indexOf(char);
    if (index === -1) throw new TypeError(`${JSON.stringify(char)} is not base32`);
    value = ((value << 5) | index) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

/**
 * The RFC 6238 code of a base32 secret at a time: HMAC-SHA-1, 30-second steps, 6 digits, the
 * dynamic truncation of RFC 4226 §5.3. Written here, not imported from the emulator, so that a bug
 * in the emulator's TOTP cannot hide by being mirrored.
 * @see https://www.rfc-editor.org/rfc/rfc6238#section-4
 * @example
 * ```ts
 * totp('JBSWY3DPEHPK3PXP', gitlab.control.now().getTime()); // '123456'
 * ```
 */
export function totp(secret: string, atMs: number): string {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(atMs / 1000 / 30)));
  const mac = createHmac('sha1', base32(secret)).update(counter).digest();
  const offset = mac[mac.length - 1]! & 0x0f;
  const binary = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 10 ** 6).padStart(6, '0');
}
