/**
 * One line for a `node:util` `parseArgs` error, the same on every command: `unknown flag --x`,
 * `--url needs a value`, `unexpected argument y`.
 */

/** The one-line message for a `parseArgs` error (the caller adds the command's name and exits 2). */
export function argumentError(error: unknown): string {
  const { code, message } = error as { code?: string; message: string };
  // `-f, --env-file <value>` names a flag with a short form: the long name is the one to show.
  const name = /'(?:-\w, )?(-[^' ]*)/.exec(message)?.[1] ?? '';
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown flag ${name}`;
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL')
    return `unexpected argument ${/'([^']*)'/.exec(message)?.[1] ?? ''}`;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE')
    return /argument missing/.test(message) ? `${name} needs a value` : `${name} takes no value`;
  return message.split('\n', 1)[0]!;
}
