import { type ReactNode, useEffect, useRef, useState } from "react";
import { errorMessage } from "../api.ts";
import { Link, useLocation } from "../router.tsx";
import { useSession } from "../session.tsx";

const NAV: { to: string; label: string; adminOnly?: boolean }[] = [
  { to: "/", label: "Dashboard" },
  { to: "/live", label: "Live" },
  { to: "/upload", label: "Upload" },
  { to: "/violations", label: "Violations" },
  { to: "/reports", label: "Reports" },
  { to: "/sources", label: "Sources" },
  { to: "/alerts", label: "Alerts", adminOnly: true },
  { to: "/keys", label: "API keys", adminOnly: true },
  { to: "/settings", label: "Settings" },
];

export function Logo() {
  return (
    <svg className="logo" viewBox="0 0 32 32" aria-hidden="true">
      <rect width="32" height="32" rx="8" fill="currentColor" />
      <path d="M8 14c3-2 13-2 16 0v4c0 4-4 6-8 6s-8-2-8-6z" fill="#fff" />
      <path d="M11 17h10M12 20h8" stroke="currentColor" strokeWidth="1.5" strokeLinecap="round" />
    </svg>
  );
}

/** The frame of every signed-in page: top bar, navigation (a menu on narrow screens), content. */
export function Layout({ children }: { children: ReactNode }) {
  const { path } = useLocation();
  const session = useSession();
  const [menuOpen, setMenuOpen] = useState(false);
  const [signOutError, setSignOutError] = useState<string | null>(null);
  const main = useRef<HTMLElement>(null);
  const firstPath = useRef(path);

  // After a navigation the menu closes and focus moves to the new page, as a page load would.
  useEffect(() => {
    setMenuOpen(false);
    if (path !== firstPath.current) main.current?.focus({ preventScroll: true });
  }, [path]);

  const signOut = async () => {
    try {
      // The app sends a signed-out visitor to /login, with this page to come back to.
      await session.signOut();
    } catch (err) {
      setSignOutError(errorMessage(err));
    }
  };

  const links = NAV.filter((item) => !item.adminOnly || session.isAdmin);
  return (
    <div className="shell">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <button
          type="button"
          className="menu-button"
          aria-expanded={menuOpen}
          aria-controls="main-nav"
          onClick={() => setMenuOpen((open) => !open)}
        >
          <span className="menu-icon" aria-hidden="true" />
          <span className="visually-hidden">Menu</span>
        </button>
        <Link to="/" className="brand">
          <Logo />
          Maskwatch
        </Link>
        <div className="user-area">
          {session.user ? (
            <>
              <span className="user-name">
                {session.user.username}
                <span className="badge badge-role">{session.user.role}</span>
              </span>
              <button type="button" className="button button-small" onClick={signOut}>
                Sign out
              </button>
            </>
          ) : (
            !session.authEnabled && <span className="badge badge-role">authentication off</span>
          )}
        </div>
      </header>
      <nav id="main-nav" className={menuOpen ? "nav nav-open" : "nav"} aria-label="Main">
        <ul>
          {links.map((item) => (
            <li key={item.to}>
              <Link to={item.to} aria-current={item.to === path ? "page" : undefined}>
                {item.label}
              </Link>
            </li>
          ))}
        </ul>
      </nav>
      <main id="main" ref={main} tabIndex={-1}>
        {signOutError && (
          <div className="notice notice-error" role="alert">
            Could not sign out: {signOutError}
          </div>
        )}
        {children}
      </main>
    </div>
  );
}

/** A page's heading row: the title and, on the right, its main actions. */
export function PageHeader({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="page-header">
      <h1>{title}</h1>
      {children && <div className="page-actions">{children}</div>}
    </div>
  );
}
