/**
 * A client for tests of bodies and request targets: sends the target exactly as given (no client
 * normalises it) and a body of `size` bytes in 64 KiB chunks, and stops writing as soon as the answer
 * comes (a server may answer early and close the connection on the rest).
 */
import http from 'node:http';

/** An answer, and how much of the body had been written when it came. */
export interface Sent {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** Bytes of the body the client had written when the answer came. */
  written: number;
}

/** What to send: the method, the raw target, a body size, headers, and whether to declare the length. */
export interface SendInit {
  method: string;
  path: string;
  size?: number;
  headers?: Record<string, string>;
  /** Send `Content-Length` (otherwise the body is chunked). */
  declare?: boolean;
}

/** Sends one request to `127.0.0.1:port` (see the module comment). */
export function sendBody(port: number, init: SendInit): Promise<Sent> {
  const size = init.size ?? 0;
  return new Promise((resolve, reject) => {
    let written = 0;
    let answered = false;
    const chunk = Buffer.alloc(64 * 1024, 'a');
    const request = http.request({
      host: '127.0.0.1',
      port,
      path: init.path,
      method: init.method,
      agent: false,
      headers: { ...(init.declare ? { 'content-length': String(size) } : {}), ...init.headers },
    });
    request.on('response', (response) => {
      answered = true;
      const chunks: Buffer[] = [];
      response.on('data', (c: Buffer) => chunks.push(c));
      response.on('end', () => {
        resolve({
          status: response.statusCode ?? 0,
          headers: response.headers,
          body: Buffer.concat(chunks).toString(),
          written,
        });
        request.destroy();
      });
      response.on('error', () => undefined);
    });
    // Writing into a connection the server closed after answering is expected.
    request.on('error', (error) => {
      if (!answered) reject(error);
    });
    const pump = () => {
      while (!answered && written < size) {
        const part = Math.min(chunk.length, size - written);
        written += part;
        if (!request.write(part === chunk.length ? chunk : chunk.subarray(0, part))) {
          request.once('drain', pump);
          return;
        }
      }
      if (!answered) request.end();
    };
    pump();
  });
}
