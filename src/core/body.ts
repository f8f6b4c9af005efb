/**
 * The one reader of bodies labgate reads whole: requests to its routes (docs/security.md, HTTP-1) and
 * GitLab's answers. It never holds more than its cap in memory, refuses a declared length above the
 * cap before reading a byte, and stops reading (cancelling the stream) the moment the cap is passed.
 */
import { LabgateError } from './errors.js';

/** The cap of the small forms labgate's routes take (sign-out, ending a session, linking). */
export const FORM_MAX_BYTES = 8 * 1024;

/**
 * A body (a request's, or GitLab's answer) read whole, never more than `limit` bytes held: a declared
 * `Content-Length` above the cap is refused before a byte is read, and reading stops, cancelling the
 * stream, the moment the cap is passed. `tooLarge` makes the error thrown then.
 */
export async function readCapped(
  message: { body: ReadableStream<Uint8Array> | null; headers: Headers },
  limit: number,
  tooLarge: () => Error,
): Promise<Uint8Array<ArrayBuffer>> {
  const declared = message.headers.get('content-length');
  if (declared !== null && Number(declared) > limit) {
    await message.body?.cancel().catch(() => {});
    throw tooLarge();
  }
  if (message.body === null) return new Uint8Array(0);
  // A stream of a Request or a fetch Response gives chunks on their own ArrayBuffers.
  const reader = message.body.getReader();
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value as Uint8Array<ArrayBuffer>);
  }
  if (chunks.length === 1) return chunks[0]!;
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

/** The body of a request to a labgate route, at most `limit` bytes; `payload_too_large` above. */
export function readBody(request: Request, limit: number): Promise<Uint8Array<ArrayBuffer>> {
  return readCapped(
    request,
    limit,
    () => new LabgateError('payload_too_large', `the request body is larger than ${limit} bytes`),
  );
}

/**
 * The fields of a form POST (`application/x-www-form-urlencoded`, at most {@link FORM_MAX_BYTES}),
 * on top of the query string's; the query's alone for any other request.
 */
export async function readForm(request: Request): Promise<URLSearchParams> {
  const fields = new URLSearchParams(new URL(request.url).search);
  if (request.method !== 'POST') return fields;
  const type = (request.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  const body = await readBody(request, FORM_MAX_BYTES);
  if (type !== 'application/x-www-form-urlencoded') return fields;
  for (const [name, value] of new URLSearchParams(new TextDecoder().decode(body))) fields.set(name, value);
  return fields;
}
