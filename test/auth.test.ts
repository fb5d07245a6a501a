/**
 * Console sign-in against the real server on loopback: the first admin, sessions in http-only cookies,
 * CSRF and Origin checks on cookie requests, roles, the one-time setup screen, settings, and the console's
 * files with the page fallback.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadConfig } from "../src/server/config.ts";
import { type RunningServer, startServer } from "../src/server/main.ts";

/** The suites sign in many times from one address: a limit that only the limit's own test meets. */
const MANY_LOGINS = { MASKWATCH_LOGIN_RATE_LIMIT: "1000" };
let dir = "";
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "maskwatch-auth-"));
});
after(() => rm(dir, { recursive: true, force: true }));

async function serve(env: Record<string, string>): Promise<RunningServer> {
  const config = loadConfig({
    PORT: "0",
    HOST: "127.0.0.1",
    LOG_LEVEL: "info",
    MASKWATCH_WORKERS: "1",
    MASKWATCH_DATA_DIR: join(dir, env.name ?? "data"),
    ...env,
  });
  return startServer(config);
}

/** A cookie jar of one: the session cookie a browser would keep. */
class Client {
  cookie = "";
  csrf = "";
  constructor(readonly base: string) {}

  async call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(this.base + path, {
      method,
      headers: {
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...(this.cookie ? { cookie: this.cookie } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const set = res.headers.get("set-cookie");
    if (set) this.cookie = /^maskwatch_session=;/.test(set) ? "" : set.split(";")[0];
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(text);
    } catch {}
    return { status: res.status, json, text, headers: res.headers, setCookie: set };
  }

  async login(username: string, password: string) {
    const r = await this.call("POST", "/api/v1/auth/login", { username, password });
    if (r.status === 200) this.csrf = r.json.csrf_token as string;
    return r;
  }

  write(method: string, path: string, body?: unknown) {
    return this.call(method, path, body, { "x-csrf-token": this.csrf });
  }
}

describe("with MASKWATCH_ADMIN_PASSWORD", () => {
  let server: RunningServer;
  before(async () => {
    server = await serve({
      name: "admin",
      MASKWATCH_ADMIN_PASSWORD: "first-admin-pw",
      MASKWATCH_TRUST_PROXY: "on",
      ...MANY_LOGINS,
    });
  });
  after(() => server.close());

  test("the first admin signs in; the cookie is http-only and same-site; the session names the user", async () => {
    const c = new Client(server.url);
    assert.deepEqual((await c.call("GET", "/api/v1/auth/session")).json, {
      auth: true,
      user: null,
      csrf_token: null,
    });
    assert.deepEqual((await c.call("GET", "/api/v1/auth/setup")).json, { needed: false });
    const wrong = await c.login("admin", "not-the-password");
    assert.equal(wrong.status, 401);
    assert.equal(wrong.json.code, "invalid_credentials");
    assert.equal(wrong.setCookie, null);
    const ok = await c.login("Admin", "first-admin-pw");
    assert.equal(ok.status, 200);
    assert.match(
      ok.setCookie!,
      /^maskwatch_session=[A-Za-z0-9_-]{43}; Max-Age=604800; Path=\/; HttpOnly; SameSite=Strict$/,
    );
    const session = await c.call("GET", "/api/v1/auth/session");
    assert.equal(session.status, 200);
    assert.deepEqual((session.json.user as { username: string; role: string }).role, "admin");
    assert.equal(session.json.csrf_token, c.csrf);
    // The signed-in user reaches the API without a key.
    assert.equal((await c.call("GET", "/api/v1/sources")).status, 200);
  });

  test("over HTTPS (as the proxy says) the cookie is Secure", async () => {
    const c = new Client(server.url);
    const r = await c.call(
      "POST",
      "/api/v1/auth/login",
      { username: "admin", password: "first-admin-pw" },
      { "x-forwarded-proto": "https" },
    );
    assert.equal(r.status, 200);
    assert.match(r.setCookie!, /; Secure/);
  });

  test("cookie writes need the CSRF token; a foreign Origin is refused; API keys need neither", async () => {
    const c = new Client(server.url);
    await c.login("admin", "first-admin-pw");
    const bare = await c.call("POST", "/api/v1/keys", { name: "no-token" });
    assert.equal(bare.status, 403);
    assert.equal(bare.json.code, "csrf_failed");
    const forged = await c.call("POST", "/api/v1/keys", { name: "bad" }, { "x-csrf-token": "x".repeat(32) });
    assert.equal(forged.json.code, "csrf_failed");
    const created = await c.write("POST", "/api/v1/keys", { name: "from-console", scopes: ["events:read"] });
    assert.equal(created.status, 201);
    const foreign = await c.call("GET", "/api/v1/sources", undefined, { origin: "http://evil.example" });
    assert.equal(foreign.status, 403);
    assert.equal(foreign.json.code, "forbidden_origin");
    const same = await c.call("GET", "/api/v1/sources", undefined, { origin: server.url });
    assert.equal(same.status, 200);
    // The key made from the console works on its own, with no cookie and no CSRF token.
    const key = created.json.key as string;
    const api = await fetch(`${server.url}/api/v1/events`, { headers: { "x-api-key": key } });
    assert.equal(api.status, 200);
  });

  test("roles: a viewer reads, detects and adds a browser camera, but cannot change keys, users, other sources or settings", async () => {
    const admin = new Client(server.url);
    await admin.login("admin", "first-admin-pw");
    const made = await admin.write("POST", "/api/v1/users", {
      username: "guard",
      password: "viewer-pw-1",
      role: "viewer",
    });
    assert.equal(made.status, 201);
    assert.equal(made.json.role, "viewer");
    assert.equal(
      (
        await admin.write("POST", "/api/v1/users", {
          username: "GUARD",
          password: "x-long-pw",
          role: "viewer",
        })
      ).status,
      409,
    );
    const short = await admin.write("POST", "/api/v1/users", {
      username: "pat",
      password: "short",
      role: "viewer",
    });
    assert.equal(short.status, 400);

    const viewer = new Client(server.url);
    assert.equal((await viewer.login("guard", "viewer-pw-1")).status, 200);
    for (const path of [
      "/api/v1/events",
      "/api/v1/sources",
      "/api/v1/settings",
      "/api/v1/stats?bucket=hour",
      "/get_stats",
    ]) {
      assert.equal((await viewer.call("GET", path)).status, 200, path);
    }
    for (const [method, path, body] of [
      ["POST", "/api/v1/keys", { name: "v" }],
      ["GET", "/api/v1/keys", undefined],
      ["GET", "/api/v1/users", undefined],
      ["POST", "/api/v1/sources", { name: "cam", kind: "file", url: "/tmp/x.mp4" }],
      ["PUT", "/api/v1/settings", { smoothing_frames: 5 }],
    ] as const) {
      const r = await viewer.write(method, path, body);
      assert.equal(r.status, 403, `${method} ${path}`);
      assert.equal(r.json.code, "forbidden");
      assert.match(r.json.message as string, /viewer role/);
    }
    const camera = await viewer.write("POST", "/api/v1/sources", {
      name: "Browser camera (guard)",
      kind: "browser",
    });
    assert.equal(camera.status, 201, "a viewer may add their own browser camera");
  });

  test("logout ends the session; a password change ends the others; removing a user ends theirs", async () => {
    const admin = new Client(server.url);
    await admin.login("admin", "first-admin-pw");
    await admin.write("POST", "/api/v1/users", { username: "temp", password: "temp-pw-123", role: "viewer" });
    const a = new Client(server.url);
    const b = new Client(server.url);
    await a.login("temp", "temp-pw-123");
    await b.login("temp", "temp-pw-123");

    const kept = a.cookie;
    assert.equal((await a.write("POST", "/api/v1/auth/logout")).status, 200);
    assert.equal(a.cookie, "", "the cookie is cleared");
    a.cookie = kept;
    assert.equal((await a.call("GET", "/api/v1/events")).status, 401, "the old cookie no longer works");

    await a.login("temp", "temp-pw-123");
    const wrong = await a.write("POST", "/api/v1/auth/password", {
      current_password: "nope",
      new_password: "temp-pw-456",
    });
    assert.equal(wrong.status, 403);
    const changed = await a.write("POST", "/api/v1/auth/password", {
      current_password: "temp-pw-123",
      new_password: "temp-pw-456",
    });
    assert.equal(changed.status, 200);
    assert.equal((await a.call("GET", "/api/v1/events")).status, 200, "the session that changed it stays");
    assert.equal((await b.call("GET", "/api/v1/events")).status, 401, "the other session ended");
    assert.equal((await b.login("temp", "temp-pw-123")).status, 401);
    assert.equal((await b.login("temp", "temp-pw-456")).status, 200);

    const users = (await admin.call("GET", "/api/v1/users")).json.users as { id: string; username: string }[];
    const temp = users.find((u) => u.username === "temp")!;
    assert.equal((await admin.write("DELETE", `/api/v1/users/${temp.id}`)).status, 200);
    assert.equal((await b.call("GET", "/api/v1/events")).status, 401);
    const self = users.find((u) => u.username === "admin")!;
    assert.equal((await admin.write("DELETE", `/api/v1/users/${self.id}`)).status, 409);
  });

  test("settings: validated, changed in part, kept across a restart", async () => {
    const admin = new Client(server.url);
    await admin.login("admin", "first-admin-pw");
    for (const bad of [
      { smoothing_frames: 0 },
      { mask_threshold: 2 },
      { stream_detector: "nope" },
      { colour: "red" },
      {},
    ]) {
      const r = await admin.write("PUT", "/api/v1/settings", bad);
      assert.equal(r.status, 400, JSON.stringify(bad));
    }
    const r = await admin.write("PUT", "/api/v1/settings", {
      smoothing_frames: 5,
      mask_threshold: 0.7,
      cooldown_seconds: 30,
      retention_days: 14,
    });
    assert.equal(r.status, 200);
    const settings = r.json.settings as Record<string, unknown>;
    assert.equal(settings.smoothing_frames, 5);
    assert.equal(settings.stream_detector, "maskwatch", "untouched fields keep their values");
    await server.close();
    server = await serve({
      name: "admin",
      MASKWATCH_ADMIN_PASSWORD: "first-admin-pw",
      MASKWATCH_TRUST_PROXY: "on",
      ...MANY_LOGINS,
    });
    const again = new Client(server.url);
    await again.login("admin", "first-admin-pw");
    assert.deepEqual((await again.call("GET", "/api/v1/settings")).json.settings, settings);
  });
});

test("sign-in attempts are limited per client address (10 a minute by default)", async () => {
  const server = await serve({ name: "limit", MASKWATCH_ADMIN_PASSWORD: "first-admin-pw" });
  try {
    const c = new Client(server.url);
    const codes: number[] = [];
    for (let i = 0; i < 11; i++) codes.push((await c.login("admin", `guess-${i}`)).status);
    assert.deepEqual(codes, [...Array(10).fill(401), 429]);
    assert.equal((await c.login("admin", "first-admin-pw")).status, 429, "even the right password waits");
  } finally {
    await server.close();
  }
});

describe("without an admin password: the one-time setup code", () => {
  test("the code from the log makes the first admin, once", async () => {
    const log = join(dir, "setup.log");
    // The code is also printed as a plain line on stderr, where a new user looks.
    let printed = "";
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
      printed += String(chunk);
      return write(chunk, ...rest);
    }) as typeof process.stderr.write;
    const server = await serve({ name: "setup", MASKWATCH_LOG_FILE: log }).finally(() => {
      process.stderr.write = write;
    });
    try {
      const c = new Client(server.url);
      assert.deepEqual((await c.call("GET", "/api/v1/auth/setup")).json, { needed: true });
      const code = /setup code ([A-Z0-9]{4}-[A-Z0-9]{4})/.exec(await readFile(log, "utf8"))?.[1];
      assert.ok(code, "the setup code is in the log");
      assert.match(
        printed,
        new RegExp(`\\n  Maskwatch setup code: ${code}\\n  Open http://127\\.0\\.0\\.1:\\d+/ `),
      );
      const wrong = await c.call("POST", "/api/v1/auth/setup", {
        setup_code: "AAAA-AAAA",
        username: "boss",
        password: "boss-pw-123",
      });
      assert.equal(wrong.status, 403);
      assert.equal(wrong.json.code, "invalid_setup_code");
      const made = await c.call("POST", "/api/v1/auth/setup", {
        setup_code: code.toLowerCase(),
        username: "boss",
        password: "boss-pw-123",
      });
      assert.equal(made.status, 201);
      assert.ok(c.cookie, "signed in at once");
      assert.ok(
        Date.parse((made.json.user as { last_login_at: string }).last_login_at) > 0,
        "setting up is the admin's first sign-in",
      );
      const listed = (await c.call("GET", "/api/v1/users")).json.users as {
        username: string;
        last_login_at: string;
      }[];
      assert.ok(Date.parse(listed.find((u) => u.username === "boss")!.last_login_at) > 0);
      assert.equal((await c.call("GET", "/api/v1/auth/session")).json.user && true, true);
      const again = await new Client(server.url).call("POST", "/api/v1/auth/setup", {
        setup_code: code,
        username: "boss2",
        password: "boss-pw-123",
      });
      assert.equal(again.status, 409);
      assert.deepEqual((await c.call("GET", "/api/v1/auth/setup")).json, { needed: false });
    } finally {
      await server.close();
    }
  });
});

describe("the console's files", () => {
  test("index.html for page paths, assets cached, API paths stay JSON 404s, nothing outside web/dist", async () => {
    const server = await serve({ name: "files", MASKWATCH_ADMIN_PASSWORD: "first-admin-pw" });
    try {
      const html = { accept: "text/html,application/xhtml+xml" };
      for (const path of ["/", "/live", "/violations", "/settings"]) {
        const r = await fetch(server.url + path, { headers: html });
        assert.equal(r.status, 200, path);
        assert.match(r.headers.get("content-type")!, /text\/html/);
        assert.equal(r.headers.get("cache-control"), "no-cache");
        assert.match(await r.text(), /<div id="root">/);
      }
      const index = await (await fetch(server.url)).text();
      const asset = /src="(\/assets\/[^"]+\.js)"/.exec(index)?.[1];
      assert.ok(asset, "index.html loads a built script");
      const js = await fetch(server.url + asset);
      assert.equal(js.status, 200);
      assert.match(js.headers.get("cache-control")!, /immutable/);
      for (const path of [
        "/api/v1/nope",
        "/detect",
        "/assets/missing.js",
        "/%2e%2e/package.json",
        "/..%2f..%2fpackage.json",
      ]) {
        const r = await fetch(server.url + path, { headers: { accept: "application/json" } });
        assert.equal(r.status, 404, path);
        const text = await r.text();
        assert.ok(!text.includes('"name": "maskwatch"'), `${path} served a file from outside`);
      }
      const page = await fetch(`${server.url}/api/v1/nope`, { headers: html });
      assert.equal(page.status, 404, "an unknown API path is never the console page");
    } finally {
      await server.close();
    }
  });
});
