import type { Child } from 'hono/jsx';
import type { Session } from './session.js';

export const NAV = [
  ['/ui/', 'Overview'],
  ['/ui/devices', 'Devices'],
  ['/ui/rounds', 'Rounds'],
  ['/ui/releases', 'Releases'],
  ['/ui/rollouts', 'Rollouts'],
  ['/ui/examples', 'Hard examples'],
  ['/ui/keys', 'Keys'],
  ['/ui/audit', 'Audit log'],
] as const;

function Head({ title }: { title: string }) {
  return (
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      <title>{title} · Apprentice console</title>
      <link rel="stylesheet" href="/ui/assets/console.css" />
      <link rel="stylesheet" href="/ui/assets/uPlot.min.css" />
      <script src="/ui/assets/htmx.min.js" defer></script>
      <script src="/ui/assets/htmx-sse.min.js" defer></script>
      <script src="/ui/assets/uPlot.min.js" defer></script>
      <script src="/ui/assets/console.js" defer></script>
    </head>
  );
}

/**
 * Every signed-in page: the navigation, the operator's name, the logout form, and the CSRF token that
 * htmx adds to every request it sends (`hx-headers` on body); plain forms carry it as a hidden field.
 */
export function Page({ title, path, session, children }: { title: string; path: string; session: Session; children: Child }) {
  return (
    <html lang="en">
      <Head title={title} />
      <body hx-headers={JSON.stringify({ 'x-csrf-token': session.csrf })}>
        <header>
          <nav aria-label="Console">
            {NAV.map(([href, label]) => (
              <a href={href} aria-current={href === path || (href !== '/ui/' && path.startsWith(href)) ? 'page' : undefined}>
                {label}
              </a>
            ))}
          </nav>
          <span class="who">signed in as {session.who}</span>
          <form method="post" action="/ui/logout">
            <Csrf session={session} />
            <button type="submit">Log out</button>
          </form>
        </header>
        <main id="main">
          <h1>{title}</h1>
          {children}
        </main>
      </body>
    </html>
  );
}

export function Csrf({ session }: { session: Session }) {
  return <input type="hidden" name="_csrf" value={session.csrf} />;
}

export function LoginPage({ error, next }: { error?: string; next: string }) {
  return (
    <html lang="en">
      <Head title="Log in" />
      <body>
        <main>
          <form class="login" method="post" action="/ui/login">
            <h1>Apprentice console</h1>
            {error ? (
              <p class="error" role="alert">
                {error}
              </p>
            ) : null}
            <label>
              Admin token
              <input type="password" name="token" autocomplete="current-password" required />
            </label>
            <label>
              Your name (for the audit log)
              <input type="text" name="who" maxlength={64} autocomplete="username" />
            </label>
            <input type="hidden" name="next" value={next} />
            <button class="primary" type="submit">
              Log in
            </button>
          </form>
        </main>
      </body>
    </html>
  );
}

export const fmtTime = (iso: string | null): string => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$|Z$/, ' UTC') : '—');
