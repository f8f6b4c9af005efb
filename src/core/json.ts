/**
 * Strict JSON for what labgate trusts from GitLab: an object that names a member twice is refused.
 * RFC 8259 §4 leaves such objects' meaning to each parser (`JSON.parse` keeps the last, others the
 * first), so two readers of one token response or ID token could see two different users; RFC 7519 §4
 * has JWT parsers refuse them. GitLab never sends one.
 */

/** Why {@link parseStrictJson} refused a text. */
export class StrictJsonError extends Error {
  override name = 'StrictJsonError';
  /** `syntax`: not JSON at all; `duplicate`: an object names {@link StrictJsonError.member} twice. */
  readonly reason: 'syntax' | 'duplicate';
  /** The repeated member name (decoded), for `duplicate`. */
  readonly member: string | undefined;

  constructor(reason: 'syntax' | 'duplicate', member?: string, options?: { cause?: unknown }) {
    super(
      reason === 'syntax' ? 'the text is not JSON' : 'an object names a member twice',
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.reason = reason;
    this.member = member;
  }
}

/**
 * `JSON.parse`, refusing any object (at any depth) that names a member twice, however the names are
 * spelled: `"sub"` and `"\u0073ub"` are the same name.
 *
 * @throws {StrictJsonError} when the text is not JSON or repeats a member name.
 * @example
 * ```ts
 * parseStrictJson('{"sub":"1"}'); // { sub: '1' }
 * parseStrictJson('{"sub":"1","sub":"2"}'); // throws StrictJsonError (reason 'duplicate', member 'sub')
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc8259#section-4
 */
export function parseStrictJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new StrictJsonError('syntax', undefined, { cause });
  }
  const member = repeatedMember(text);
  if (member !== null) throw new StrictJsonError('duplicate', member);
  return value;
}

/**
 * The first member name that an object in `text` repeats (decoded), or `null`. `text` must already be
 * valid JSON (`JSON.parse` accepted it): the scan trusts the grammar and only tracks names.
 *
 * @example
 * ```ts
 * repeatedMember('{"a":{"b":1,"\\u0062":2}}'); // 'b'
 * repeatedMember('[{"a":1},{"a":2}]'); // null: two objects, one name each
 * ```
 */
export function repeatedMember(text: string): string | null {
  // One frame per open container: the names seen so far for an object, null for an array. A stack
  // rather than recursion, so deep nesting within the response size cap cannot overflow the call stack.
  const frames: (Set<string> | null)[] = [];
  let expectName = false;
  let i = 0;
  const length = text.length;
  while (i < length) {
    const c = text.charCodeAt(i);
    if (c === 0x7b /* { */) {
      frames.push(new Set());
      expectName = true;
      i++;
    } else if (c === 0x5b /* [ */) {
      frames.push(null);
      expectName = false;
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      frames.pop();
      expectName = false;
      i++;
    } else if (c === 0x2c /* , */) {
      expectName = frames.at(-1) instanceof Set;
      i++;
    } else if (c === 0x22 /* " */) {
      const end = stringEnd(text, i);
      const names = frames.at(-1);
      if (expectName && names instanceof Set) {
        const name = decodeString(text, i + 1, end);
        if (names.has(name)) return name;
        names.add(name);
        expectName = false;
      }
      i = end + 1;
    } else {
      // Whitespace, `:`, numbers and literals: nothing to track.
      i++;
    }
  }
  return null;
}

/** The index of the quote that closes the string whose opening quote is at `start`. */
function stringEnd(text: string, start: number): number {
  let i = start + 1;
  // Bounded by the text's end, so a text that is not JSON after all cannot make the scan loop.
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === 0x22) return i;
    i += c === 0x5c /* \ */ ? 2 : 1;
  }
  return text.length;
}

const SIMPLE_ESCAPES: Record<string, string> = {
  '"': '"',
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

/**
 * The string between `start` and `end` (exclusive) with its escapes decoded into UTF-16 code units,
 * exactly as `JSON.parse` decodes it (a `\uD83D\uDE00` pair and a lone surrogate alike).
 */
function decodeString(text: string, start: number, end: number): string {
  const raw = text.slice(start, end);
  if (!raw.includes('\\')) return raw;
  let out = '';
  let i = 0;
  while (i < raw.length) {
    const slash = raw.indexOf('\\', i);
    if (slash === -1) {
      out += raw.slice(i);
      break;
    }
    out += raw.slice(i, slash);
    const kind = raw[slash + 1]!;
    if (kind === 'u') {
      out += String.fromCharCode(Number.parseInt(raw.slice(slash + 2, slash + 6), 16));
      i = slash + 6;
    } else {
      out += SIMPLE_ESCAPES[kind] ?? kind;
      i = slash + 2;
    }
  }
  return out;
}
