/**
 * The one way text a client (or GitLab) chose reaches a log line: control characters escaped, the
 * length bounded. Every line labgate logs passes through {@link safeLogger}; values interpolated into
 * a line pass through {@link logText} first, so each is bounded on its own (docs/security.md, LOG-1).
 */

/** Where labgate writes what happened. Nothing it logs ever holds a token, secret or code. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** The longest value one interpolation puts into a log line, by default. */
export const LOG_VALUE_MAX = 200;
/** The longest line labgate logs. */
const LOG_LINE_MAX = 2000;

// C0 and C1 controls, DEL, and the Unicode line and paragraph separators and bidi overrides: each could
// start a line of its own, or make a line read as something else, in a terminal or a log viewer.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function escapeOne(c: string): string {
  if (c === '\n') return '\\n';
  if (c === '\r') return '\\r';
  if (c === '\t') return '\\t';
  const code = c.charCodeAt(0);
  return code <= 0xff
    ? `\\x${code.toString(16).padStart(2, '0')}`
    : `\\u${code.toString(16).padStart(4, '0')}`;
}

/**
 * Text safe for one log line: control characters written as escapes (`\n`, `\x1b`, `\u2028`),
 * backslashes doubled (so an escape in the log is never one the client typed), and at most `max`
 * characters, with `…` where it was cut.
 */
export function logText(value: unknown, max: number = LOG_VALUE_MAX): string {
  const text = typeof value === 'string' ? value : String(value);
  const cut = text.length > max ? `${text.slice(0, max)}…` : text;
  return cut.replace(/\\/g, '\\\\').replace(UNSAFE, escapeOne);
}

/** A logger whose every line is one line: control characters escaped, bounded in length. */
export function safeLogger(logger: Logger): Logger {
  const line = (message: string) =>
    (message.length > LOG_LINE_MAX ? `${message.slice(0, LOG_LINE_MAX)}…` : message).replace(
      UNSAFE,
      escapeOne,
    );
  return {
    info: (message) => logger.info(line(message)),
    warn: (message) => logger.warn(line(message)),
    error: (message) => logger.error(line(message)),
  };
}
