/** `/`: the home page, for signed-in and signed-out visitors alike. */
import { getSession } from 'labgate/next';
import { homePage } from '../../pages.js';
import { auth } from '../lib/auth.js';
import { htmlPage, render } from '../lib/respond.js';

/** The home page. */
export async function GET(request: Request): Promise<Response> {
  const labgate = await auth();
  return render(labgate, request, async () =>
    htmlPage(homePage(labgate, (await getSession(labgate))?.user ?? null)),
  );
}
