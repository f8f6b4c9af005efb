/** Small helpers of the example's route handlers. */
import type { Labgate } from 'labgate';

/** An HTML page. */
export function htmlPage(html: string): Response {
  return new Response(html, { headers: { 'content-type': 'text/html; charset=utf-8' } });
}

/**
 * Renders a page, answering labgate's failures (the store down) with labgate's own page, as every
 * host does: never Next's 500.
 */
export async function render(
  auth: Labgate,
  request: Request,
  page: () => Promise<Response>,
): Promise<Response> {
  try {
    return await page();
  } catch (error) {
    return auth.errorResponse(error, request);
  }
}
