import type { ComponentType } from "react";
import { ErrorNotice, Loading } from "./components/Feedback.tsx";
import { Layout, Logo } from "./components/Layout.tsx";
import { AlertsPage } from "./pages/Alerts.tsx";
import { DashboardPage } from "./pages/Dashboard.tsx";
import { KeysPage } from "./pages/Keys.tsx";
import { LivePage } from "./pages/Live.tsx";
import { LoginPage } from "./pages/Login.tsx";
import { NotFoundPage } from "./pages/NotFound.tsx";
import { ReportsPage } from "./pages/Reports.tsx";
import { SettingsPage } from "./pages/Settings.tsx";
import { SetupPage } from "./pages/Setup.tsx";
import { SourcesPage } from "./pages/Sources.tsx";
import { UploadPage } from "./pages/Upload.tsx";
import { ViolationsPage } from "./pages/Violations.tsx";
import { Redirect, safeReturnPath, useLocation } from "./router.tsx";
import { useSession } from "./session.tsx";

const PAGES: Record<string, ComponentType> = {
  "/": DashboardPage,
  "/live": LivePage,
  "/upload": UploadPage,
  "/violations": ViolationsPage,
  "/reports": ReportsPage,
  "/alerts": AlertsPage,
  "/sources": SourcesPage,
  "/keys": KeysPage,
  "/settings": SettingsPage,
};

const PUBLIC_PAGES: Record<string, ComponentType> = { "/login": LoginPage, "/setup": SetupPage };

export function App() {
  const session = useSession();
  const { path, params } = useLocation();
  const { state } = session;

  if (state.status === "loading") {
    return (
      <div className="center-screen">
        <Loading label="Connecting to Maskwatch…" />
      </div>
    );
  }
  if (state.status === "failed") {
    return (
      <div className="center-screen">
        <div className="auth-card">
          <h1 className="auth-title">
            <Logo /> Maskwatch
          </h1>
          <ErrorNotice message={`The console could not start: ${state.message}`} onRetry={session.reload} />
        </div>
      </div>
    );
  }

  const Public = PUBLIC_PAGES[path];
  if (state.status === "signed-out") {
    if (Public) return <Public />;
    const wanted = path + window.location.search;
    return <Redirect to={wanted === "/" ? "/login" : `/login?next=${encodeURIComponent(wanted)}`} />;
  }
  // Signed in (or no authentication): the sign-in pages have nothing left to do.
  if (Public) return <Redirect to={safeReturnPath(params.get("next"))} />;

  const Page = PAGES[path] ?? NotFoundPage;
  return (
    <Layout>
      <Page key={path} />
    </Layout>
  );
}
