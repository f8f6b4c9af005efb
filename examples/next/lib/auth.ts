/**
 * The app's labgate for routes, `proxy.ts` and server components: `auth` gives the process's instance
 * (lib/labgate.ts), created at the first request rather than when Next builds the app.
 */
export { processLabgate as auth } from './labgate.js';
