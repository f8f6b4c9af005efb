/**
 * The one reader of request bodies on labgate's routes (docs/security.md, HTTP-1): it never holds more
 * than its cap in memory, refuses a declared length above the cap before reading a byte, and stops
 * reading (cancelling the stream) the moment the cap is passed.
 */
import { LabgateError } from './errors.js';

/** The cap of the small forms labgate's routes take (sign-out, ending a session, linking). */
export const FORM_MAX_BYTES = 8 * 1024;

/**
 * The body of `request`, at most `limit` bytes, as bytes; an empty array when there is none. Rejects with
 * `payload_too_large` above the cap.
 */
export async function readBody(request: Request, limit: number): Promise<Uint8Array> {
  const declared = request.headers.get('content-length');
  const refuse = () =>
    new LabgateError('payload_too_large', `the request body is larger than ${limit} bytes`);
  if (declared !== null && Number(declared) > limit) {
    await request.body?.cancel().catch(() => {});
    throw refuse();
  }
  if (request.body === null) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw refuse();
    }
    chunks.push(value);
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
