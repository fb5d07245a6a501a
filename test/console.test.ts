/**
 * The console end to end: the real server on loopback, Debian's chromium driven by playwright-core,
 * a fake camera playing a video made from dataset faces (a person takes the mask off). A user signs
 * in, uploads a photo, watches the live camera, finds the violation in the table and the CSV, and
 * makes an API key that works. Screenshots of every page go to test-artifacts/console/.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { loadConfig } from "../src/server/config.ts";
import { type RunningServer, startServer } from "../src/server/main.ts";
import { browserSkipReason, launchBrowser, screenshot, toY4m, watchErrors } from "./support/browser.ts";
import { unlessCI } from "./support/ci.ts";
import { ensureModels } from "./support/models.ts";
import { sharedPath } from "./support/paths.ts";
import { maskOffScene, videoSkipReason, writeVideo } from "./support/video.ts";

const PASSWORD = "console-admin-pw";
const PHOTO = sharedPath("datasets/dlib-faces/2008_002506.jpg");

let skip: string | null = browserSkipReason() ?? videoSkipReason() ?? (PHOTO ? null : "dlib-faces is absent");
if (skip) console.log(`# console: skipped: ${skip}`);
let dir = "";
let server: RunningServer | undefined;
let browser: Browser | undefined;
let context: BrowserContext;
let page: Page;
let errors: string[] = [];

before(async () => {
  skip ??= await ensureModels(["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet", "blazeface-back-256"]);
  if (skip) return;
  dir = await mkdtemp(join(tmpdir(), "maskwatch-console-"));
  const { count, scene } = await maskOffScene();
  await writeVideo(join(dir, "scene.mkv"), count, scene);
  await toY4m(join(dir, "scene.mkv"), join(dir, "camera.y4m"));
  server = await startServer(
    loadConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_LEVEL: "warn",
      MASKWATCH_WORKERS: "1",
      MASKWATCH_DATA_DIR: join(dir, "data"),
      MASKWATCH_ADMIN_PASSWORD: PASSWORD,
    }),
  );
  browser = await launchBrowser(join(dir, "camera.y4m"));
  context = await browser.newContext({ baseURL: server.url, viewport: { width: 1280, height: 860 } });
  errors = watchErrors(context);
  page = await context.newPage();
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("sign in: the console sends a visitor to the login page, then to the dashboard", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  await page.goto("/violations");
  await page.waitForURL(/\/login/);
  await page.getByLabel("Username").fill("admin");
  await page.getByLabel("Password").fill("wrong-password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page
    .getByRole("alert")
    .filter({ hasText: /wrong username or password/i })
    .waitFor();
  await screenshot(page, "login");
  // Chromium logs the refused sign-in (a 401) itself: that one is expected, nothing else.
  assert.deepEqual(
    errors.map((e) => e.replace(/^\S+: /, "")),
    ["console.error: Failed to load resource: the server responded with a status of 401 (Unauthorized)"],
  );
  errors.length = 0;
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/violations$/);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "maskwatch_session");
  assert.ok(session?.httpOnly, "the session cookie is http-only");
  assert.equal(session.sameSite, "Strict");
  assert.equal(await page.evaluate(() => document.cookie.includes("maskwatch_session")), false);
});

test("upload: the boxes drawn are the faces the API returned", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  await page.goto("/upload");
  const answer = page.waitForResponse(
    (r) => r.url().includes("/api/v1/detect") && r.request().method() === "POST",
  );
  await page.locator('input[type="file"]').setInputFiles(PHOTO!);
  const response = await answer;
  assert.equal(response.status(), 200);
  const body = (await response.json()) as { faces: unknown[] };
  assert.equal(body.faces.length, 3, "the photo has three faces");
  const canvas = page.getByTestId("upload-canvas");
  await canvas.and(page.locator(`[data-faces="${body.faces.length}"]`)).waitFor();
  const shown = JSON.parse((await page.getByTestId("upload-json").textContent()) ?? "{}") as {
    faces: unknown[];
  };
  assert.equal(shown.faces.length, body.faces.length, "the JSON beside the image is the answer");
  await screenshot(page, "upload");
});

test("live: the browser camera's faces come back with ids and labels", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  await page.goto("/live");
  await page.getByRole("button", { name: "Start" }).click();
  const overlay = page.getByTestId("live-overlay");
  await page.waitForFunction(
    () => {
      const el = document.querySelector('[data-testid="live-overlay"]');
      return Number(el?.getAttribute("data-frames")) >= 10 && Number(el?.getAttribute("data-tracks")) >= 1;
    },
    undefined,
    { timeout: 60_000 },
  );
  assert.ok(Number(await overlay.getAttribute("data-tracks")) >= 1);
  await screenshot(page, "live");
});

test("violations: the person who took the mask off is in the table and in the CSV", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  // The camera keeps sending while the monitor smooths and settles: wait for the violation.
  const deadline = Date.now() + 90_000;
  let violation: { id: number; label: string; time: string } | undefined;
  while (!violation) {
    assert.ok(Date.now() < deadline, "no violation within 90 s of live video");
    const r = await page.request.get("/api/v1/events?kind=violation");
    violation = ((await r.json()) as { events: { id: number; label: string; time: string }[] }).events[0];
    if (!violation) await page.waitForTimeout(1000);
  }
  assert.equal(violation.label, "no_mask");
  await page.getByRole("button", { name: "Stop" }).click();

  await page.goto("/violations");
  const rows = page.getByTestId("violation-row");
  await rows.first().waitFor();
  assert.match((await rows.first().textContent()) ?? "", /no mask/i);
  await screenshot(page, "violations");

  const href = await page.getByRole("link", { name: /export csv/i }).getAttribute("href");
  assert.ok(href?.startsWith("/api/v1/violations.csv"), `CSV link: ${href}`);
  const csv = await (await page.request.get(href!)).text();
  const [header, ...lines] = csv.trim().split(/\r?\n/);
  assert.ok(header.startsWith("Timestamp,Face_ID,Status,Confidence"), header);
  assert.ok(
    lines.some((l) => l.endsWith(`,${violation.id}`)),
    `the violation ${violation.id} is a CSV row:\n${csv}`,
  );
});

test("keys: a key made in the console is shown once and works against the API", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  await page.goto("/keys");
  await page.getByLabel("Name").fill("camera-gateway");
  await page.getByRole("button", { name: /create/i }).click();
  const key = ((await page.getByTestId("new-key").textContent()) ?? "").trim();
  assert.match(key, /^mw_/);
  await screenshot(page, "keys");
  const photo = await readFile(PHOTO!);
  const r = await fetch(`${server!.url}/api/v1/detect`, {
    method: "POST",
    headers: { "x-api-key": key, "content-type": "image/jpeg" },
    body: photo,
  });
  assert.equal(r.status, 200);
  assert.equal(((await r.json()) as { faces: unknown[] }).faces.length, 3);
  await page.reload();
  assert.equal(await page.getByTestId("new-key").count(), 0, "the key is not shown again");
  await page.getByText("camera-gateway").first().waitFor();
});

test("a viewer sees everything but cannot change keys, sources or settings", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  const csrf = (await (await page.request.get("/api/v1/auth/session")).json()).csrf_token as string;
  const made = await page.request.post("/api/v1/users", {
    data: { username: "guard", password: "guard-pass-1", role: "viewer" },
    headers: { "x-csrf-token": csrf },
  });
  assert.equal(made.status(), 201);
  // What the viewer must not have, the admin has (so the checks below can fail).
  await page.goto("/sources");
  await page.getByRole("button", { name: "Add source" }).waitFor();
  await page.goto("/settings");
  assert.ok(await page.getByLabel("Smoothing frames").isEnabled());
  const viewerContext = await browser!.newContext({
    baseURL: server!.url,
    viewport: { width: 1280, height: 860 },
  });
  const viewerErrors = watchErrors(viewerContext);
  try {
    const viewer = await viewerContext.newPage();
    await viewer.goto("/login");
    await viewer.getByLabel("Username").fill("guard");
    await viewer.getByLabel("Password").fill("guard-pass-1");
    await viewer.getByRole("button", { name: "Sign in" }).click();
    await viewer.getByRole("heading", { name: "Dashboard", level: 1 }).waitFor();
    assert.equal(await viewer.getByRole("link", { name: "API keys" }).count(), 0, "no keys page in the menu");
    await viewer.goto("/settings");
    await viewer.getByLabel("Smoothing frames").waitFor();
    assert.ok(await viewer.getByLabel("Smoothing frames").isDisabled(), "settings are read-only");
    assert.equal(await viewer.getByRole("button", { name: "Save settings" }).count(), 0);
    await viewer.goto("/sources");
    await viewer.getByRole("heading", { level: 1 }).waitFor();
    assert.equal(
      await viewer.getByRole("button", { name: "Add source" }).count(),
      0,
      "no way to add a source",
    );
    await screenshot(viewer, "sources-viewer");
    // The viewer's own camera is a source of its own, not the admin's.
    await viewer.goto("/live");
    await viewer.getByRole("button", { name: "Start" }).click();
    await viewer.waitForFunction(
      () => Number(document.querySelector('[data-testid="live-overlay"]')?.getAttribute("data-frames")) >= 3,
      undefined,
      { timeout: 60_000 },
    );
    await viewer.getByRole("button", { name: "Stop" }).click();
    const names = (
      (await (await viewer.request.get("/api/v1/sources")).json()).sources as { name: string; kind: string }[]
    )
      .filter((x) => x.kind === "browser")
      .map((x) => x.name)
      .sort();
    assert.deepEqual(names, ["Browser camera (admin)", "Browser camera (guard)"]);
    assert.deepEqual(viewerErrors, []);
  } finally {
    await viewerContext.close();
  }
});

test("every page renders; a phone-sized screen too; no console errors anywhere", async (t) => {
  if (skip) return t.skip(unlessCI(skip));
  for (const [path, name] of [
    ["/", "dashboard"],
    ["/sources", "sources"],
    ["/settings", "settings"],
  ] as const) {
    await page.goto(path);
    await page.getByRole("heading", { level: 1 }).first().waitFor();
    await page.waitForLoadState("networkidle").catch(() => {});
    await screenshot(page, name);
  }
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto("/");
  await page.getByRole("heading", { level: 1 }).first().waitFor();
  await screenshot(page, "dashboard-phone");
  assert.deepEqual(errors, []);
});
