/**
 * The reference app's pages, the same on every host: "Sign in with GitLab", a profile page with the
 * user's GitLab data and projects read with the user's own token, and sign-out. Plain server-rendered
 * HTML, no client-side script. Each host's app (`examples/<host>/app.ts`) only routes to these.
 */
import {
  ERROR_CODES,
  GitLabApiError,
  isLabgateError,
  type Labgate,
  type Session,
  type SessionUser,
} from 'labgate';

/** A project as GitLab's `/api/v4/projects` lists it (the fields this page shows). */
interface GitLabProject {
  id: number;
  name_with_namespace: string;
  web_url: string;
  description: string | null;
  last_activity_at: string;
}

const html = (value: string | null | undefined): string =>
  (value ?? '').replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  );

const date = (value: string | null): string =>
  value
    ? new Date(value).toLocaleString('en-GB', { dateStyle: 'long', timeStyle: 'short', timeZone: 'UTC' })
    : '—';

function layout(title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${html(title)} · labgate example</title>
<style>
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f1e24;background:#fafafa}
header{display:flex;justify-content:space-between;align-items:center;padding:.75rem 1.5rem;background:#fff;border-bottom:1px solid #dcdcde}
header a{color:inherit;text-decoration:none;font-weight:600}
main{max-width:48rem;margin:2rem auto;padding:0 1rem}
.card{background:#fff;border:1px solid #dcdcde;border-radius:8px;padding:1.5rem;margin-bottom:1.5rem}
.profile{display:flex;gap:1.5rem;align-items:center}
.profile img{border-radius:50%;width:96px;height:96px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}
dt{color:#626168}
.button{display:inline-block;padding:.6rem 1.2rem;border-radius:4px;border:0;background:#fc6d26;color:#fff;font:inherit;font-weight:600;text-decoration:none;cursor:pointer}
.button.secondary{background:#fff;color:#1f1e24;border:1px solid #89888d}
ul.projects{list-style:none;padding:0;margin:0}
ul.projects li{padding:.5rem 0;border-bottom:1px solid #ececef}
.muted{color:#626168}
.badge{font-size:.8rem;background:#e9f3fc;color:#0b5cad;border-radius:1rem;padding:0 .5rem}
</style>
</head>
<body>
<header><a href="/">labgate example</a><nav>${body.includes('data-signed-in') ? '<a href="/profile">Profile</a>' : ''}</nav></header>
<main>
${body}
</main>
</body>
</html>
`;
}

function signOutForm(): string {
  return '<form method="post" action="/auth/logout"><button class="button secondary" type="submit">Sign out</button></form>';
}

/** The user's projects read with the user's own token, or a sentence saying why GitLab did not list them. */
async function projectsOf(auth: Labgate, session: Session): Promise<GitLabProject[] | string> {
  try {
    // labgate's client renews the token and retries once when GitLab refuses it: GitLab may end a
    // token before its expiry time (revoked by an administrator, a clock that runs ahead).
    return await auth.gitlab(session).get<GitLabProject[]>('/projects', {
      membership: true,
      simple: true,
      order_by: 'last_activity_at',
      per_page: 20,
    });
  } catch (error) {
    if (!(error instanceof GitLabApiError)) throw error;
    if (error.status === 0) return 'GitLab could not be reached. Try again in a moment.';
    // GitLab says insufficient_scope (403) only for a token without the scope; other 403s mean other things.
    if (error.status === 403 && error.error === 'insufficient_scope')
      return 'GitLab refused: the sign-in did not grant the read_api scope this page needs (insufficient_scope).';
    if (error.status === 401)
      return 'GitLab refused the app’s token, even after renewing it. Sign out and sign in again.';
    return `GitLab answered ${error.status}${error.gitlabMessage ? `: ${error.gitlabMessage}` : ''}.`;
  }
}

function profileHtml(user: SessionUser, projects: GitLabProject[] | string): string {
  const projectList =
    typeof projects === 'string'
      ? `<p class="muted" data-testid="projects-error">Your projects could not be read. ${html(projects)}</p>`
      : projects.length === 0
        ? '<p class="muted">You are not a member of any project.</p>'
        : `<ul class="projects" data-testid="projects">${projects
            .map(
              (p) =>
                `<li><a href="${html(p.web_url)}">${html(p.name_with_namespace)}</a>${p.description ? ` <span class="muted">— ${html(p.description)}</span>` : ''}</li>`,
            )
            .join('')}</ul>`;
  return layout(
    user.name,
    `<section class="card profile" data-signed-in>
${user.avatarUrl ? `<img src="${html(user.avatarUrl)}" alt="" width="96" height="96">` : ''}
<div>
<h1 data-testid="name">${html(user.name)}</h1>
<p class="muted" data-testid="username">@${html(user.username)}</p>
</div>
</section>
<section class="card">
<h2>Your GitLab account</h2>
<dl>
<dt>Email</dt><dd data-testid="email">${html(user.email ?? '—')} ${user.emailVerified ? '<span class="badge">verified</span>' : '<span class="muted">(not verified)</span>'}</dd>
<dt>GitLab profile</dt><dd>${user.webUrl ? `<a data-testid="web-url" href="${html(user.webUrl)}">${html(user.webUrl)}</a>` : '—'}</dd>
<dt>Account created</dt><dd data-testid="created-at">${html(date(user.createdAt))}</dd>
<dt>Last sign-in</dt><dd data-testid="last-sign-in">${html(date(user.lastSignInAt))}</dd>
<dt>GitLab</dt><dd>${html(user.issuer)}</dd>
</dl>
</section>
<section class="card">
<h2>Your projects</h2>
${projectList}
</section>
${signOutForm()}`,
  );
}

/**
 * The home page: a greeting for a signed-in user, the sign-in button otherwise.
 * @example
 * ```ts
 * res.type('html').send(homePage(auth, req.labgate?.user ?? null));
 * ```
 */
export function homePage(auth: Labgate, user: SessionUser | null): string {
  return layout(
    'Welcome',
    user
      ? `<section class="card" data-signed-in><h1>Hello, ${html(user.name)}</h1><p><a class="button" href="/profile">Your profile</a></p>${signOutForm()}</section>`
      : `<section class="card"><h1>labgate example</h1><p>Sign in with your GitLab account to see your profile and projects.</p><p><a class="button" data-testid="sign-in" href="${html(auth.signInUrl('/profile'))}">Sign in with GitLab</a></p></section>`,
  );
}

/**
 * The profile page of a signed-in session: its HTML, or where to send the browser when GitLab refused
 * the refresh token (labgate has then ended the session: sign in again).
 * @example
 * ```ts
 * const page = await profilePage(auth, session);
 * if ('redirect' in page) res.redirect(303, page.redirect); else res.type('html').send(page.html);
 * ```
 */
export async function profilePage(
  auth: Labgate,
  session: Session,
): Promise<{ html: string } | { redirect: string }> {
  let projects: GitLabProject[] | string;
  try {
    projects = await projectsOf(auth, session);
  } catch (error) {
    if (!isLabgateError(error)) throw error;
    if (error.code === 'session_required') return { redirect: auth.signInUrl('/profile') };
    projects = `${ERROR_CODES[error.code].title}. Try again in a moment.`;
  }
  return { html: profileHtml(session.user, projects) };
}
