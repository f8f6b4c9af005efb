/** The document around the server-component pages (the other pages are whole HTML documents). */
import type { ReactNode } from 'react';

/** The layout. */
export default function Layout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  );
}
