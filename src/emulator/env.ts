/**
 * What every group of emulator routes receives: the state and the emulator's public URLs.
 */
import type { EmulatorState } from './state.js';

export interface Env {
  state: EmulatorState;
  /** The base path GitLab is served under (`''` or `/gitlab`). */
  basePath: string;
  /** The issuer: origin plus base path, no trailing slash. Set once the server listens. */
  baseUrl: string;
  /** The absolute URL of a path below the base path. */
  url(path: string): string;
}

/** Creates an {@link Env} whose `baseUrl` is filled in once the server knows its port. */
export function createEnv(state: EmulatorState, basePath: string): Env {
  const env: Env = {
    state,
    basePath,
    baseUrl: '',
    url: (path: string) => `${env.baseUrl}${path}`,
  };
  return env;
}
