/**
 * labgate's runtime errors: one class, one closed list of codes, and the one place that maps each
 * code to an HTTP status and a message a person can act on. Misuse at startup throws `TypeError`.
 */

/** Every code a {@link LabgateError} can carry (documented in docs/errors.md). */
export const ERROR_CODES = {
  gitlab_unreachable: {
    status: 502,
    title: 'GitLab is unreachable',
    advice: 'GitLab did not answer in time. Try again in a moment.',
  },
  gitlab_error: {
    status: 502,
    title: 'GitLab answered with an error',
    advice: 'GitLab could not complete the sign-in. Try again in a moment.',
  },
  discovery_failed: {
    status: 502,
    title: 'GitLab is not configured as expected',
    advice:
      'The GitLab instance did not describe itself correctly. The administrator should run `labgate doctor`.',
  },
  access_denied: {
    status: 403,
    title: 'GitLab refused access',
    advice: 'Access was not granted at GitLab. Sign in again and choose Authorize to continue.',
  },
  authorization_failed: {
    status: 400,
    title: 'GitLab could not start the sign-in',
    advice:
      'GitLab refused the sign-in request. Start again; if it keeps failing, the administrator should check the application settings.',
  },
  transaction_missing: {
    status: 400,
    title: 'This sign-in link expired',
    advice: 'The sign-in took too long or was started in another browser. Start again.',
  },
  transaction_invalid: {
    status: 400,
    title: 'This sign-in link is not valid',
    advice: 'The sign-in could not be matched to this browser. Start again.',
  },
  callback_invalid: {
    status: 400,
    title: 'This sign-in response is not valid',
    advice: 'The response from GitLab was malformed. Start again.',
  },
  token_exchange_failed: {
    status: 400,
    title: 'GitLab refused the sign-in',
    advice: 'GitLab did not accept this sign-in (it may have been used already). Start again.',
  },
  id_token_invalid: {
    status: 502,
    title: 'GitLab’s identity token was not valid',
    advice:
      'The sign-in was stopped because the identity could not be verified. Start again; if it keeps failing, check the server clock.',
  },
  access_forbidden: {
    status: 403,
    title: 'Access denied',
    advice: 'Your GitLab account does not meet this site’s access rules. Ask its administrators for access.',
  },
  account_unavailable: {
    status: 403,
    title: 'This GitLab account cannot sign in',
    advice: 'GitLab reports the account as blocked or inactive. Contact your GitLab administrator.',
  },
  session_required: { status: 401, title: 'Sign-in required', advice: 'Sign in with GitLab to continue.' },
  csrf_rejected: {
    status: 403,
    title: 'Request refused',
    advice: 'This request did not come from this site. Go back and try again.',
  },
  method_not_allowed: {
    status: 405,
    title: 'Method not allowed',
    advice: 'This address does not accept that kind of request.',
  },
  request_invalid: {
    status: 400,
    title: 'Request not understood',
    advice: 'This request is malformed. Go back and try again.',
  },
  payload_too_large: {
    status: 413,
    title: 'Request too large',
    advice: 'This request carries more data than this address accepts.',
  },
  not_found: { status: 404, title: 'Not found', advice: 'There is nothing at this address.' },
  store_unavailable: {
    status: 503,
    title: 'Sign-in is temporarily unavailable',
    advice: 'The session store is not reachable. Try again in a moment.',
  },
} as const;

/** A code from the closed list of {@link ERROR_CODES}. */
export type LabgateErrorCode = keyof typeof ERROR_CODES;

/**
 * The one runtime error of labgate. `code` is stable and documented; `message` is for logs and never
 * holds a token, secret or authorization code.
 *
 * @example
 * ```ts
 * try { await labgate.handle(request); }
 * catch (error) { if (error instanceof LabgateError && error.code === 'store_unavailable') retryLater(); }
 * ```
 */
export class LabgateError extends Error {
  override name = 'LabgateError';
  /** The stable code. */
  readonly code: LabgateErrorCode;

  /** A sentence safe to show the user (never secrets, never other people's data). */
  readonly detail: string | undefined;

  constructor(
    code: LabgateErrorCode,
    message: string = ERROR_CODES[code].title,
    options?: { cause?: unknown; detail?: string },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.detail = options?.detail;
  }

  /** The HTTP status this error is answered with. */
  get status(): number {
    return ERROR_CODES[this.code].status;
  }

  /** The same, under the name Fastify's and other hosts' error handlers read. */
  get statusCode(): number {
    return this.status;
  }
}

/** Whether a value is a {@link LabgateError}, across package copies. */
export function isLabgateError(value: unknown): value is LabgateError {
  return (
    value instanceof Error &&
    value.name === 'LabgateError' &&
    typeof (value as LabgateError).code === 'string'
  );
}
