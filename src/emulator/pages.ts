/**
 * The HTML pages of the emulated GitLab: sign-in, two-factor, consent, the auto-approve "Redirecting"
 * page, the OAuth error page and the device pages. Form field names, element ids and `data-testid`s
 * are GitLab's, so browser tests written against the emulator also drive a real GitLab.
 */
import { escapeHtml as e } from './http.js';

const STYLE = `
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#fbfafd;color:#333238}
header{background:#fff;border-bottom:1px solid #dcdcde;padding:12px 24px;font-weight:600}
main{max-width:560px;margin:40px auto;padding:0 16px}
.card{background:#fff;border:1px solid #dcdcde;border-radius:4px;padding:24px}
label{display:block;font-weight:600;margin:12px 0 4px}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:8px;border:1px solid #89888d;border-radius:4px;font-size:14px}
button{padding:8px 16px;border-radius:4px;border:1px solid #89888d;background:#fff;font-size:14px;cursor:pointer}
button.confirm{background:#1f75cb;border-color:#1f75cb;color:#fff;width:100%;margin-top:16px}
button.danger{background:#dd2b0e;border-color:#dd2b0e;color:#fff}
.flash{background:#fdd4cd;border:1px solid #dd2b0e;border-radius:4px;padding:8px 12px;margin-bottom:16px}
.actions{display:flex;gap:12px;justify-content:flex-end;margin-top:16px}
form.inline{display:inline}
.muted{color:#626168}
`;

/** A page in the emulator's minimal layout. */
export function layout(title: string, body: string, options: { csrfToken?: string } = {}): string {
  const csrf = options.csrfToken
    ? `<meta name="csrf-param" content="authenticity_token">\n<meta name="csrf-token" content="${e(options.csrfToken)}">\n`
    : '';
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${e(title)} · GitLab</title>
${csrf}<style>${STYLE}</style>
</head>
<body>
<header>GitLab <span class="muted">(labgate emulator)</span></header>
${body}
</body>
</html>
`;
}

function flash(message: string | null): string {
  return message ? `<div class="flash" role="alert" data-testid="alert-danger">${e(message)}</div>` : '';
}

/** GitLab's sign-in page (`devise/sessions/new`). */
export function signInPage(options: {
  action: string;
  csrfToken: string;
  flash: string | null;
  login?: string;
}): string {
  return layout(
    'Sign in',
    `<main role="main">
<h1>Sign in</h1>
<div class="card">
${flash(options.flash)}
<form class="gl-show-field-errors" aria-live="assertive" data-testid="sign-in-form" id="new_user" action="${e(options.action)}" accept-charset="UTF-8" method="post">
<input type="hidden" name="authenticity_token" value="${e(options.csrfToken)}" autocomplete="off">
<label for="user_login">Username or primary email</label>
<input type="text" name="user[login]" id="user_login" value="${e(options.login ?? '')}" class="form-control gl-form-input js-username-field" autocomplete="username" autofocus="autofocus" autocapitalize="off" autocorrect="off" required="required" title="Username or primary email is required." data-testid="username-field">
<label for="user_password">Password</label>
<input type="password" name="user[password]" id="user_password" class="form-control gl-form-input js-password" required="required" title="Password is required." data-testid="password-field" autocomplete="current-password">
<label><input type="checkbox" name="user[remember_me]" id="user_remember_me" value="1" autocomplete="off"> Remember me</label>
<button type="submit" class="confirm js-sign-in-button" data-testid="sign-in-button">Sign in</button>
</form>
</div>
</main>`,
    { csrfToken: options.csrfToken },
  );
}

/** GitLab's two-factor step (`devise/sessions/two_factor`). */
export function twoFactorPage(options: { action: string; csrfToken: string; flash: string | null }): string {
  return layout(
    'Two-factor authentication',
    `<main role="main">
<h1>Two-factor authentication</h1>
<div class="card">
${flash(options.flash)}
<form id="js-login-2fa-device" action="${e(options.action)}" accept-charset="UTF-8" method="post">
<input type="hidden" name="authenticity_token" value="${e(options.csrfToken)}" autocomplete="off">
<input type="hidden" name="user[remember_me]" value="0" autocomplete="off">
<label for="user_otp_attempt">Enter verification code</label>
<input type="text" name="user[otp_attempt]" id="user_otp_attempt" class="form-control gl-form-input" autocomplete="one-time-code" inputmode="numeric" required="required" autofocus="autofocus" data-testid="two-fa-code-field">
<p class="muted">Enter the code from your two-factor authenticator app. If you've lost your device, you can enter one of your recovery codes.</p>
<button type="submit" class="confirm" data-testid="verify-code-button">Verify code</button>
</form>
</div>
</main>`,
    { csrfToken: options.csrfToken },
  );
}

/** The hidden fields both consent forms carry. */
export interface ConsentFields {
  client_id: string;
  redirect_uri: string;
  state: string;
  response_type: string;
  response_mode: string;
  scope: string;
  nonce: string;
  code_challenge: string;
  code_challenge_method: string;
}

const SCOPE_TEXT: Record<string, string> = {
  api: 'Grants complete read/write access to the API, including all groups and projects.',
  read_api: 'Grants read access to the API, including all groups and projects.',
  read_user: 'Grants read-only access to your profile through the /user API endpoint.',
  openid: 'Grants permission to authenticate with GitLab using OpenID Connect.',
  profile: 'Grants read-only access to your profile data using OpenID Connect.',
  email: 'Grants read-only access to your primary email address using OpenID Connect.',
  read_repository: 'Grants read-only access to repositories on private projects.',
  write_repository: 'Grants read-write access to repositories on private projects.',
};

/** GitLab's consent page (`doorkeeper/authorizations/new`): Deny is a DELETE, Authorize a POST. */
export function consentPage(options: {
  action: string;
  csrfToken: string;
  appName: string;
  admin: boolean;
  scopes: string[];
  fields: ConsentFields;
}): string {
  const hidden = Object.entries(options.fields)
    .filter(([name, value]) => value !== '' || name !== 'response_mode')
    .map(
      ([name, value]) =>
        `<input type="hidden" name="${name}" id="${name}" value="${e(value)}" autocomplete="off">`,
    )
    .join('\n');
  const csrf = `<input type="hidden" name="authenticity_token" value="${e(options.csrfToken)}" autocomplete="off">`;
  const scopes = options.scopes
    .map((s) => `<li><strong>${e(s)}</strong><div class="muted">${e(SCOPE_TEXT[s] ?? '')}</div></li>`)
    .join('\n');
  const link = `<a href="${e(options.fields.redirect_uri)}" target="_blank" rel="noopener noreferrer">${e(options.appName)}</a>`;
  const adminWarning = options.admin
    ? `<p class="flash">You are an admin, which means granting access to <strong>${e(options.appName)}</strong> will allow them to interact with GitLab as an admin as well. Proceed with caution.</p>`
    : '';
  return layout(
    'Authorize application',
    `<main role="main">
<div class="doorkeeper-authorize card">
<h4>Authorize ${link} to use your account?</h4>
${adminWarning}<p>An application called ${link} is requesting access to your GitLab account. Please note that this application is not provided by GitLab and you should verify its authenticity before allowing access.</p>
<p>This application will be able to:</p>
<ul>
${scopes}
</ul>
<div class="actions">
<form class="inline" action="${e(options.action)}" accept-charset="UTF-8" method="post">
<input type="hidden" name="_method" value="delete" autocomplete="off">
${csrf}
${hidden}
<button type="submit" data-testid="deny-button">Deny</button>
</form>
<form class="inline" action="${e(options.action)}" accept-charset="UTF-8" method="post">
${csrf}
${hidden}
<button type="submit" class="danger" id="commit-changes" data-testid="authorization-button">Authorize</button>
</form>
</div>
</div>
</main>`,
    { csrfToken: options.csrfToken },
  );
}

/** GitLab's auto-approve page (`doorkeeper/authorizations/redirect`), answered with status 200. */
export function redirectingPage(uri: string): string {
  return layout(
    'Redirecting',
    `<main role="main">
<h1 class="page-title">Redirecting</h1>
<div><a href="${e(uri)}">Click here to redirect to ${e(uri)}</a></div>
<script>
(function () {
  var redirectUri = ${JSON.stringify(uri).replace(/</g, '\\u003c')};
  var hash = window.location.hash;
  if (/^#[\\w-]+$/.test(hash) && redirectUri.indexOf('#') === -1) redirectUri += hash;
  window.location = redirectUri;
})();
</script>
</main>`,
  );
}

/** GitLab's OAuth error page (`doorkeeper/authorizations/error`): 200, the description only, no redirect. */
export function oauthErrorPage(description: string): string {
  return layout(
    'An error has occurred',
    `<main role="main">
<h3 class="page-title">An error has occurred</h3>
<pre>${e(description)}</pre>
</main>`,
  );
}

/** The auto-submitting form of `response_mode=form_post`. */
export function formPostPage(action: string, fields: Record<string, string>): string {
  const inputs = Object.entries(fields)
    .map(([name, value]) => `<input type="hidden" name="${e(name)}" value="${e(value)}">`)
    .join('\n');
  return `<!DOCTYPE html>
<html><head><title>Submit This Form</title></head>
<body onload="javascript:document.forms[0].submit()">
<form method="post" action="${e(action)}">
${inputs}
</form>
</body></html>
`;
}

/** Rails' answer to a form without a valid authenticity token. */
export function rejectedPage(): string {
  return layout(
    'The change you requested was rejected (422)',
    `<main role="main"><h1>422</h1><p>The change you requested was rejected.</p></main>`,
  );
}

/** The signed-in home page of the emulated GitLab. */
export function homePage(options: {
  name: string | null;
  username: string | null;
  signOutAction: string;
  csrfToken: string;
}): string {
  const body = options.username
    ? `<p data-testid="signed-in-user">Signed in as <strong>${e(options.name ?? '')}</strong> (@${e(options.username)})</p>
<form action="${e(options.signOutAction)}" method="post"><input type="hidden" name="authenticity_token" value="${e(options.csrfToken)}"><button type="submit" data-testid="sign-out-link">Sign out</button></form>`
    : '<p>Not signed in.</p>';
  return layout('Dashboard', `<main role="main"><div class="card">${body}</div></main>`, {
    csrfToken: options.csrfToken,
  });
}

/** The device-flow page where a signed-in user enters a user code. */
export function deviceCodePage(options: {
  action: string;
  csrfToken: string;
  flash: string | null;
  userCode: string;
}): string {
  return layout(
    'Device authorization',
    `<main role="main">
<h1>Connect a device</h1>
<div class="card">
${flash(options.flash)}
<form action="${e(options.action)}" method="post">
<input type="hidden" name="authenticity_token" value="${e(options.csrfToken)}">
<label for="user_code">Device code</label>
<input type="text" name="user_code" id="user_code" value="${e(options.userCode)}" required data-testid="device-code-field">
<button type="submit" class="confirm" data-testid="device-code-submit">Submit</button>
</form>
</div>
</main>`,
    { csrfToken: options.csrfToken },
  );
}

/** The device-flow confirmation page. */
export function deviceConfirmPage(options: {
  action: string;
  csrfToken: string;
  appName: string;
  userCode: string;
  scopes: string[];
}): string {
  const field = (action: string) =>
    `<input type="hidden" name="authenticity_token" value="${e(options.csrfToken)}"><input type="hidden" name="user_code" value="${e(options.userCode)}"><input type="hidden" name="decision" value="${action}">`;
  return layout(
    'Authorize device',
    `<main role="main">
<div class="card">
<h4>Authorize ${e(options.appName)} to use your account?</h4>
<p>This application will be able to: ${options.scopes.map(e).join(', ')}</p>
<div class="actions">
<form class="inline" action="${e(options.action)}" method="post">${field('deny')}<button type="submit" data-testid="deny-button">Deny</button></form>
<form class="inline" action="${e(options.action)}" method="post">${field('authorize')}<button type="submit" class="danger" data-testid="authorization-button">Authorize</button></form>
</div>
</div>
</main>`,
    { csrfToken: options.csrfToken },
  );
}

/** A short message page. */
export function messagePage(title: string, message: string): string {
  return layout(
    title,
    `<main role="main"><div class="card"><h1>${e(title)}</h1><p>${e(message)}</p></div></main>`,
  );
}
