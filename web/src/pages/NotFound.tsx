import { PageHeader } from "../components/Layout.tsx";
import { useDocumentTitle } from "../hooks.ts";
import { Link } from "../router.tsx";

export function NotFoundPage() {
  useDocumentTitle("Not found");
  return (
    <>
      <PageHeader title="Page not found" />
      <p>
        There is no page at this address. Go to the <Link to="/">dashboard</Link>.
      </p>
    </>
  );
}
