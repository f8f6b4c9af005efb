import type { Env } from './env.js';
import type { Router } from './http.js';

/** Registers the OIDC routes. */
export function registerOidcRoutes(_router: Router, _env: Env): void {}
