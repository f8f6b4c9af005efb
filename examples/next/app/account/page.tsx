/**
 * `/account`: the signed-in user, rendered by a server component. It reads the session with
 * `getSession` (read-only: a server component cannot set cookies) and sends a signed-out visitor to
 * sign in with Next's `redirect`.
 */
import { getSession } from 'labgate/next';
import { redirect } from 'next/navigation.js';
import { auth } from '../../lib/auth.js';

/** The account page. */
export default async function AccountPage() {
  const session = await getSession(auth);
  if (!session) redirect((await auth()).signInUrl('/account'));
  const { user } = session;
  return (
    <main>
      <h1 data-testid="name">{user.name}</h1>
      <p data-testid="username">@{user.username}</p>
      <form method="post" action="/auth/logout">
        <button type="submit">Sign out</button>
      </form>
    </main>
  );
}
