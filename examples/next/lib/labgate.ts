/**
 * The example's labgate, from the environment (README.md, "Configuration"), created once per process.
 * Next bundles each route on its own, so a module-level variable would exist once per route: the
 * instance lives on `globalThis` instead, where the custom server (server.ts) puts the one it made.
 */
import type { Labgate, LabgateOptions, Store } from 'labgate';
import { labgateFromEnv } from '../../serve.js';

/** Where the process's labgate lives (a registered symbol: every bundle of the app finds the same). */
export const LABGATE_KEY: unique symbol = Symbol.for('labgate.example.next') as never;

type Holder = { [LABGATE_KEY]?: Promise<Labgate> };

/**
 * Creates the example's labgate and opens its store, as every example does (examples/serve.ts).
 * @example
 * ```ts
 * const { auth, store } = await createExampleLabgate(process.env);
 * ```
 */
export async function createExampleLabgate(
  env: Record<string, string | undefined>,
  overrides: Partial<LabgateOptions> = {},
): Promise<{ auth: Labgate; store: Store }> {
  const auth = await labgateFromEnv(env, overrides);
  return { auth, store: auth.store };
}

/**
 * Makes `auth` the process's labgate (what the custom server does before Next loads the app); `null`
 * forgets it.
 * @example
 * ```ts
 * provideLabgate(auth);
 * ```
 */
export function provideLabgate(auth: Labgate | null): void {
  if (auth) (globalThis as Holder)[LABGATE_KEY] = Promise.resolve(auth);
  else delete (globalThis as Holder)[LABGATE_KEY];
}

/**
 * The process's labgate: the one the custom server provided, or (under `next start` or `next dev`)
 * one created from `process.env` at the first call.
 * @example
 * ```ts
 * const auth = await processLabgate();
 * ```
 */
export function processLabgate(): Promise<Labgate> {
  const holder = globalThis as Holder;
  holder[LABGATE_KEY] ??= createExampleLabgate(process.env).then(({ auth }) => auth);
  return holder[LABGATE_KEY];
}
