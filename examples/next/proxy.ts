/**
 * Sends signed-out browsers to sign in before a protected page renders. Not the only check: the
 * routes check again (see labgateProxy in labgate/next).
 */
import { labgateProxy } from 'labgate/next';
import { auth } from './lib/auth.js';

/** The proxy. */
export const proxy = labgateProxy(auth, { protect: ['/profile', '/me'] });

/** Where the proxy runs at all. */
export const config = { matcher: ['/profile/:path*', '/me'] };
