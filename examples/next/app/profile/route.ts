/**
 * `/profile`: the user's GitLab profile and projects. proxy.ts sends signed-out browsers to sign in
 * before this runs; `requireUser` checks again here, where the data is read.
 */
import { requireUser } from 'labgate/next';
import { profilePage } from '../../../pages.js';
import { auth } from '../../lib/auth.js';
import { htmlPage, render } from '../../lib/respond.js';

/** The profile page. */
export const GET = requireUser(auth, (request, { session, labgate }) =>
  render(labgate, request, async () => {
    const page = await profilePage(labgate, session);
    if ('redirect' in page) return new Response(null, { status: 303, headers: { location: page.redirect } });
    return htmlPage(page.html);
  }),
);
