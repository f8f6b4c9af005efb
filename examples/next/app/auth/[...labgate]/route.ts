/** labgate's routes: `/auth/login`, `/auth/callback`, `/auth/logout`, `/auth/session`, … */
import { handlers } from 'labgate/next';
import { auth } from '../../../lib/auth.js';

export const { GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS } = handlers(auth);
