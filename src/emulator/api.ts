import type { Env } from './env.js';
import type { Router } from './http.js';

/** Registers the REST API v4 routes. */
export function registerApiRoutes(_router: Router, _env: Env): void {}
