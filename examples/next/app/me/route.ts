/** `/me`: the signed-in user as JSON. */
import { requireUser } from 'labgate/next';
import { auth } from '../../lib/auth.js';

/** The user behind the session. */
export const GET = requireUser(auth, (_request, { session }) => Response.json(session.user));
