import type { Env } from './env.js';
import type { Router } from './http.js';

/** Registers the OAuth routes. */
export function registerOAuthRoutes(_router: Router, _env: Env): void {}
