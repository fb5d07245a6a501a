/**
 * The deployment artefacts (deploy/, .dockerignore), checked without Docker or a cluster:
 * nginx -t on both sites and the plain-HTTP site proxying a stub app on loopback; compose.yaml
 * against the Compose Specification schema; the Kubernetes manifests (the several-replica base and
 * the one-pod SQLite overlay) against the Kubernetes API schemas and with each other; the
 * Dockerfile statically; the systemd unit with systemd-analyze; and every setting they name against
 * the app's own configuration. The shapes several replicas need (no sticky upstream, two or more
 * replicas, no shared volume, each pod's own address advertised) are checked too. Each validator is
 * also fed a broken copy and must reject it. A missing tool skips its part with the reason.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, request, type Server } from "node:http";
import { type AddressInfo, createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Ajv } from "ajv";
import WebSocket, { WebSocketServer } from "ws";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { MODELS } from "../src/models/registry.ts";
import { loadConfig } from "../src/server/config.ts";
import { skipUnlessCI, unlessCI } from "./support/ci.ts";
import { freePort } from "./support/cluster.ts";
import { REPO } from "./support/paths.ts";

const DEPLOY = join(REPO, "deploy");
const read = (...parts: string[]) => readFileSync(join(REPO, ...parts), "utf8");
const DEFAULTS = loadConfig({});
/** The largest body the app itself accepts: JSON with a base64 image (src/server/app.ts). */
const APP_BODY_LIMIT = Math.ceil(DEFAULTS.maxUploadBytes * 1.4) + 4096;

const DOCKER_TEXT = read("deploy/Dockerfile");
const DOCKERIGNORE = read(".dockerignore");
const PACKAGE = JSON.parse(read("package.json")) as { scripts: Record<string, string> };
/** The image's numeric USER, which the Kubernetes pods must run as. */
const DOCKER_UID = Number(/^USER\s+(\d+)/m.exec(DOCKER_TEXT)?.[1] ?? -1);
/** Kubernetes schemas come from the npm package kubernetes-models (not vendored: see deploy/schemas). */
const K8S_MODELS_SKIP_HINT = "add the devDependency kubernetes-models@4.5.1";
const K8S_MODELS = (await k8sModel("v1", "ConfigMap")) !== null;
if (!K8S_MODELS) console.log(`# deploy: Kubernetes schema checks skipped: ${K8S_MODELS_SKIP_HINT}`);

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v && typeof v === "object" && !Array.isArray(v) ? (v as Json) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

let work = "";
before(async () => {
  work = await mkdtemp(join(tmpdir(), "maskwatch-deploy-"));
});
after(() => rm(work, { recursive: true, force: true }));

/** A program on PATH (or in /usr/sbin, which a non-root PATH lacks), else null. */
function findTool(name: string): string | null {
  for (const cmd of [name, `/usr/sbin/${name}`, `/usr/bin/${name}`]) {
    const r = spawnSync(cmd, ["--version"], { stdio: "ignore" });
    if (!r.error) return cmd;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Environment variables: every name the artefacts hand to the app must be one the app reads.

/** Names the app reads: identifiers of the form MASKWATCH_*, and the few plain ones, in src/. */
function appEnvNames(): Set<string> {
  const names = new Set<string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ts")) {
        const src = readFileSync(p, "utf8");
        for (const m of src.matchAll(/\b(MASKWATCH_[A-Z0-9_]+)\b/g)) names.add(m[1]);
        for (const m of src.matchAll(/(?:env\.|env\[")([A-Z][A-Z0-9_]*)/g)) names.add(m[1]);
        for (const m of src.matchAll(/\b(?:int|url|onOff)\("([A-Z][A-Z0-9_]*)"/g)) names.add(m[1]);
      }
    }
  };
  walk(join(REPO, "src"));
  return names;
}
const APP_ENV = appEnvNames();
/** Read by Node, libraries or the C library rather than by the app's code. */
const EXTERNAL_ENV = new Set(["NODE_ENV", "MALLOC_ARENA_MAX"]);

function unknownEnv(names: Iterable<string>): string[] {
  return [...names].filter((n) => !APP_ENV.has(n) && !EXTERNAL_ENV.has(n));
}

/** KEY=VALUE lines of an env file; commented-out `# KEY=…` lines count as names too. */
function envFile(text: string): { values: Record<string, string>; names: string[] } {
  const values: Record<string, string> = {};
  const names: string[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (!m) continue;
    names.push(m[2]);
    if (!m[1]) values[m[2]] = m[3].trim();
  }
  return { values, names };
}

test("environment names: the app reads every one (and a typo is caught)", () => {
  assert.ok(APP_ENV.has("MASKWATCH_TRUST_PROXY") && APP_ENV.has("DATABASE_URL") && APP_ENV.has("PORT"));
  assert.deepEqual(unknownEnv(["MASKWATCH_TRUSTPROXY", "DATABASE_URI", "PORT"]), [
    "MASKWATCH_TRUSTPROXY",
    "DATABASE_URI",
  ]);
  const example = envFile(read("deploy/maskwatch.env.example"));
  assert.deepEqual(unknownEnv(example.names), [], "deploy/maskwatch.env.example");
  const unit = read("deploy/maskwatch.service");
  const unitNames = [...unit.matchAll(/^Environment=([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]);
  assert.ok(unitNames.includes("MASKWATCH_DATA_DIR"));
  assert.deepEqual(unknownEnv(unitNames), [], "deploy/maskwatch.service");
});

// ---------------------------------------------------------------------------------------------
// nginx

const NGINX = findTool("nginx");
const OPENSSL = findTool("openssl");
const NGINX_SKIP = NGINX ? null : "nginx is not installed (apt-get install -y nginx)";
if (NGINX_SKIP) console.log(`# deploy: nginx checks skipped: ${NGINX_SKIP}`);

const SITE_TLS = read("deploy/nginx/maskwatch.conf");
const SITE_HTTP = read("deploy/nginx/maskwatch-http.conf");
const LOCATIONS = read("deploy/nginx/snippets/maskwatch-locations.conf");

/**
 * A throwaway nginx prefix: a minimal nginx.conf whose http block includes `site`, the shared
 * snippet beside it, and (for TLS) a fresh self-signed certificate in certs/. nginx resolves
 * upstream host names at load, so compose's "app" becomes 127.0.0.1 (its only edit).
 */
async function nginxPrefix(name: string, site: string, locations = LOCATIONS): Promise<string> {
  const dir = join(work, name);
  await mkdir(join(dir, "snippets"), { recursive: true });
  await mkdir(join(dir, "certs"), { recursive: true });
  await mkdir(join(dir, "temp"), { recursive: true });
  await writeFile(join(dir, "site.conf"), site.replace(/\bserver app:8080\b/g, "server 127.0.0.1:8080"));
  await writeFile(join(dir, "snippets/maskwatch-locations.conf"), locations);
  const t = join(dir, "temp");
  await writeFile(
    join(dir, "nginx.conf"),
    [
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log warn;`,
      "events { worker_connections 64; }",
      "http {",
      `  access_log ${dir}/access.log;`,
      `  client_body_temp_path ${t}/body;`,
      `  proxy_temp_path ${t}/proxy;`,
      `  fastcgi_temp_path ${t}/fastcgi;`,
      `  uwsgi_temp_path ${t}/uwsgi;`,
      `  scgi_temp_path ${t}/scgi;`,
      "  include site.conf;",
      "}",
      "",
    ].join("\n"),
  );
  return dir;
}

async function selfSignedCert(dir: string): Promise<void> {
  const r = spawnSync(
    OPENSSL!,
    [
      ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"],
      ...["-keyout", join(dir, "certs/privkey.pem"), "-out", join(dir, "certs/fullchain.pem")],
    ],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr);
}

function nginxTest(dir: string): { ok: boolean; output: string } {
  const r = spawnSync(NGINX!, ["-t", "-p", `${dir}/`, "-c", join(dir, "nginx.conf")], { encoding: "utf8" });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

/** A directive's arguments in an nginx file, comments stripped (first occurrence per line). */
function directives(conf: string, name: string): string[] {
  const out: string[] = [];
  for (const raw of conf.split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    const m = new RegExp(`^${name}\\s+([^;]*);`).exec(line);
    if (m) out.push(m[1].trim());
  }
  return out;
}

/** nginx sizes: 16m, 512k, 1g, bytes. */
function nginxSize(v: string): number {
  const m = /^(\d+)([kmg]?)$/i.exec(v);
  assert.ok(m, `not an nginx size: ${v}`);
  const unit = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase() as "" | "k" | "m" | "g"];
  return Number(m[1]) * unit;
}

/** The locations that must stream (SSE, MJPEG, WebSocket): unbuffered, with long timeouts. */
function streamingProblems(locations: string): string[] {
  const problems: string[] = [];
  for (const loc of [
    "= /api/v1/live",
    "= /video_feed",
    "~ ^/api/v1/sources/[^/]+/mjpeg$",
    "~ ^/api/v1/sources/[^/]+/frames$",
  ]) {
    const start = locations.indexOf(`location ${loc} {`);
    if (start < 0) {
      problems.push(`no location ${loc}`);
      continue;
    }
    const block = locations.slice(start, locations.indexOf("}", start));
    if (!/proxy_pass http:\/\/maskwatch;/.test(block)) problems.push(`${loc}: not proxied`);
    if (!/proxy_buffering off;/.test(block)) problems.push(`${loc}: proxy_buffering is not off`);
    if (!/proxy_read_timeout 1h;/.test(block)) problems.push(`${loc}: short proxy_read_timeout`);
  }
  return problems;
}

/**
 * How a site's upstream picks an app server. Any replica serves any request (shared state in Redis
 * and PostgreSQL), so nothing may pin a client to one: least_conn, which evens out the long-lived
 * SSE, MJPEG and WebSocket connections, and no ip_hash, hash or sticky.
 */
function upstreamProblems(site: string): string[] {
  const start = site.indexOf("upstream maskwatch {");
  if (start < 0) return ["no upstream maskwatch"];
  const block = site.slice(start, site.indexOf("}", start));
  const methods = block
    .split("\n")
    .map((l) => /^\s*(ip_hash|hash|sticky|random|least_conn)\b[^;]*;/.exec(l.replace(/#.*$/, ""))?.[1])
    .filter((m): m is string => m !== undefined);
  const problems: string[] = [];
  for (const m of methods) if (m !== "least_conn") problems.push(`upstream pins or scatters clients: ${m}`);
  if (!methods.includes("least_conn")) problems.push("upstream is not least_conn");
  return problems;
}

/** The headers helmet sends by default (src/server/app.ts registers @fastify/helmet). */
const APP_SECURITY_HEADERS = [
  "content-security-policy",
  "cross-origin-opener-policy",
  "cross-origin-resource-policy",
  "origin-agent-cluster",
  "referrer-policy",
  "strict-transport-security",
  "x-content-type-options",
  "x-dns-prefetch-control",
  "x-download-options",
  "x-frame-options",
  "x-permitted-cross-domain-policies",
  "x-xss-protection",
];

describe("nginx", { skip: skipUnlessCI(NGINX_SKIP ?? false) }, () => {
  test("nginx -t accepts the TLS site with a throwaway self-signed certificate", async (t) => {
    if (!OPENSSL) return t.skip(unlessCI("openssl is not installed (apt-get install -y openssl)"));
    const dir = await nginxPrefix("tls", SITE_TLS);
    await selfSignedCert(dir);
    const r = nginxTest(dir);
    assert.ok(r.ok, r.output);
    assert.match(r.output, /test is successful/);
  });

  test("nginx -t accepts the plain-HTTP site", async () => {
    const r = nginxTest(await nginxPrefix("http", SITE_HTTP));
    assert.ok(r.ok, r.output);
  });

  test("nginx -t rejects broken copies (bad value, unknown directive, missing certificate)", async () => {
    const badValue = nginxTest(
      await nginxPrefix(
        "bad-value",
        SITE_HTTP,
        LOCATIONS.replace("proxy_buffering off;", "proxy_buffering of;"),
      ),
    );
    assert.ok(!badValue.ok, "proxy_buffering of; was accepted");
    assert.match(badValue.output, /proxy_buffering/);
    const unknown = nginxTest(
      await nginxPrefix("bad-directive", SITE_HTTP.replace("keepalive 16;", "keepalive_connections 16;")),
    );
    assert.ok(!unknown.ok, "an unknown directive was accepted");
    assert.match(unknown.output, /unknown directive/);
    const noCert = nginxTest(await nginxPrefix("no-cert", SITE_TLS));
    assert.ok(!noCert.ok, "the TLS site loaded without its certificate");
  });

  test("TLS, redirect, HSTS and the app's own security headers are not duplicated", () => {
    assert.deepEqual(directives(SITE_TLS, "ssl_protocols"), ["TLSv1.2 TLSv1.3"]);
    assert.ok(directives(SITE_TLS, "listen").some((l) => /^443 ssl\b/.test(l)));
    assert.ok(directives(SITE_TLS, "return").includes("301 https://$host$request_uri"));
    assert.ok(
      directives(SITE_TLS, "ssl_ciphers")[0]
        .split(":")
        .every((c) => /^ECDHE-.*(GCM|POLY1305)/.test(c)),
    );
    const added = [...directives(SITE_TLS, "add_header"), ...directives(LOCATIONS, "add_header")].map((a) =>
      a.split(/\s+/)[0].toLowerCase(),
    );
    assert.ok(added.includes("strict-transport-security"), "no HSTS");
    const maxAge = Number(/max-age=(\d+)/.exec(directives(SITE_TLS, "add_header").join(" "))?.[1]);
    assert.ok(maxAge >= 31536000, `HSTS max-age ${maxAge} is under a year`);
    const hidden = directives(SITE_TLS, "proxy_hide_header").map((h) => h.toLowerCase());
    const twice = added.filter((h) => APP_SECURITY_HEADERS.includes(h) && !hidden.includes(h));
    assert.deepEqual(twice, [], "headers the app already sends");
    // The plain site must not send HSTS.
    assert.deepEqual(directives(SITE_HTTP, "add_header"), []);
  });

  test("body size, upstream keepalive and streaming locations match the app", () => {
    const size = nginxSize(directives(LOCATIONS, "client_max_body_size")[0]);
    assert.ok(size >= APP_BODY_LIMIT, `client_max_body_size ${size} < the app's ${APP_BODY_LIMIT}`);
    assert.ok(size <= 4 * DEFAULTS.maxUploadBytes, `client_max_body_size ${size} is far above the app's`);
    for (const site of [SITE_TLS, SITE_HTTP]) {
      assert.equal(directives(site, "keepalive").length, 1);
      assert.ok(directives(site, "server").length >= 1);
    }
    const upstreams = directives(SITE_HTTP, "server").map((s) => s.split(/\s+/)[0]);
    assert.deepEqual(upstreams, [`127.0.0.1:${DEFAULTS.port}`]);
    assert.deepEqual(streamingProblems(LOCATIONS), []);
    // (Buffering cannot be told apart on loopback: nginx 1.22 passes a lone SSE event through
    // even with proxy_buffering on, so this static check is what guards it.)
    const buffered = LOCATIONS.replace(
      "location = /api/v1/live {\n    proxy_pass http://maskwatch;\n    proxy_buffering off;",
      "location = /api/v1/live {\n    proxy_pass http://maskwatch;",
    );
    assert.deepEqual(streamingProblems(buffered), ["= /api/v1/live: proxy_buffering is not off"]);
    assert.deepEqual(streamingProblems(LOCATIONS.replace("location = /video_feed {", "location /video {")), [
      "no location = /video_feed",
    ]);
  });

  test("both upstreams spread clients over every replica (least_conn, no ip_hash)", () => {
    assert.deepEqual(upstreamProblems(SITE_TLS), []);
    assert.deepEqual(upstreamProblems(SITE_HTTP), []);
    assert.deepEqual(upstreamProblems(SITE_TLS.replace("least_conn;", "ip_hash;")), [
      "upstream pins or scatters clients: ip_hash",
      "upstream is not least_conn",
    ]);
    assert.deepEqual(
      upstreamProblems(SITE_HTTP.replace("    least_conn;", "    least_conn;\n    hash $remote_addr;")),
      ["upstream pins or scatters clients: hash"],
    );
    assert.deepEqual(upstreamProblems(SITE_HTTP.replace("least_conn;", "# least_conn;")), [
      "upstream is not least_conn",
    ]);
  });

  describe("the plain-HTTP site proxying a stub app on loopback", () => {
    let stub: Server;
    let wss: WebSocketServer;
    let nginx: ChildProcess | undefined;
    let base = "";
    const seen: { url: string; headers: Record<string, unknown>; bytes: number }[] = [];

    before(async () => {
      wss = new WebSocketServer({ noServer: true });
      stub = createServer((req, res) => {
        let bytes = 0;
        req.on("data", (c: Buffer) => {
          bytes += c.length;
        });
        req.on("end", () => {
          seen.push({ url: req.url ?? "", headers: req.headers, bytes });
          const path = (req.url ?? "").split("?")[0];
          if (path === "/api/v1/live") {
            res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
            res.write("event: status\ndata: {}\n\n"); // then nothing: the stream stays open
          } else if (path === "/video_feed" || path.endsWith("/mjpeg")) {
            res.writeHead(200, { "content-type": "multipart/x-mixed-replace; boundary=frame" });
            res.write("--frame\r\ncontent-type: image/jpeg\r\ncontent-length: 3\r\n\r\nabc\r\n");
          } else {
            res.writeHead(200, { "content-type": "application/json" });
            res.end(JSON.stringify({ url: req.url, headers: req.headers, bytes }));
          }
        });
      });
      stub.on("upgrade", (req, socket, head) => {
        wss.handleUpgrade(req, socket, head, (ws) => {
          ws.on("message", (data) => ws.send(`echo:${data.toString()}`));
        });
      });
      await new Promise<void>((r) => stub.listen(0, "127.0.0.1", r));
      const appPort = (stub.address() as AddressInfo).port;
      const port = await freePort();
      const dir = await nginxPrefix("live", retarget(SITE_HTTP, appPort, port));
      await chmod(dir, 0o755);
      nginx = spawn(
        NGINX!,
        ["-p", `${dir}/`, "-c", join(dir, "nginx.conf"), "-g", "daemon off; master_process off;"],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      let stderr = "";
      nginx.stderr?.on("data", (c: Buffer) => {
        stderr += c.toString();
      });
      await waitForPort(port, () => stderr);
      base = `http://127.0.0.1:${port}`;
    });
    after(async () => {
      if (nginx && nginx.exitCode === null) {
        const exited = new Promise((r) => nginx!.once("exit", r));
        nginx.kill("SIGTERM");
        await exited;
      }
      for (const client of wss.clients) client.terminate();
      stub.closeAllConnections();
      await new Promise((r) => stub.close(r));
    });

    test("the app sees the client's address, the scheme and the host with its port", async () => {
      const r = await get(`${base}/health`, { "x-forwarded-for": "203.0.113.9", "x-forwarded-host": "evil" });
      assert.equal(r.status, 200);
      const h = obj(JSON.parse(r.body).headers);
      assert.equal(h["x-forwarded-for"], "127.0.0.1", "the client's X-Forwarded-For must be replaced");
      assert.equal(h["x-real-ip"], "127.0.0.1");
      assert.equal(h["x-forwarded-proto"], "http");
      assert.equal(h.host, base.slice("http://".length));
      assert.equal(h["x-forwarded-host"], base.slice("http://".length));
      assert.notEqual(h.connection, "close", "upstream keepalive needs Connection: ''");
    });

    test("SSE and MJPEG arrive unbuffered", async () => {
      const sse = await firstChunk(`${base}/api/v1/live?api_key=k`);
      assert.match(sse.headers, /text\/event-stream/);
      assert.match(sse.chunk, /event: status/);
      for (const path of ["/video_feed", "/api/v1/sources/cam-1/mjpeg"]) {
        const mjpeg = await firstChunk(`${base}${path}`);
        assert.match(mjpeg.chunk, /--frame/, path);
      }
    });

    test("the browser-source WebSocket is upgraded", async () => {
      const ws = new WebSocket(`${base.replace("http", "ws")}/api/v1/sources/cam-1/frames?api_key=k`);
      const reply = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no WebSocket reply in 3 s")), 3000);
        ws.on("open", () => ws.send("frame"));
        ws.on("message", (d) => {
          clearTimeout(timer);
          resolve(d.toString());
        });
        ws.on("error", reject);
      });
      ws.close();
      assert.equal(reply, "echo:frame");
    });

    test("bodies up to the app's limit pass, larger ones get 413 from nginx, /metrics is closed", async () => {
      const ok = await post(`${base}/api/v1/detect`, APP_BODY_LIMIT);
      assert.equal(ok.status, 200);
      assert.equal(JSON.parse(ok.body).bytes, APP_BODY_LIMIT);
      const before = seen.length;
      const big = await post(`${base}/api/v1/detect`, 17 * 1024 * 1024);
      assert.equal(big.status, 413);
      const metrics = await get(`${base}/metrics`);
      assert.equal(metrics.status, 404);
      assert.equal(seen.length, before, "nginx passed a request it should have stopped");
    });
  });
});

/** The plain site pointed at the stub app and listening on `port` (and nothing else changed). */
function retarget(site: string, appPort: number, port: number): string {
  const upstream = /^(\s*server\s+)127\.0\.0\.1:8080\b/m;
  const listen = /^(\s*listen\s+)127\.0\.0\.1:8081;/m;
  assert.ok(upstream.test(site) && listen.test(site), "maskwatch-http.conf: upstream or listen moved");
  return site
    .replace(upstream, (_, head: string) => `${head}127.0.0.1:${appPort}`)
    .replace(listen, (_, head: string) => `${head}127.0.0.1:${port};`);
}

async function waitForPort(port: number, log: () => string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const up = await new Promise<boolean>((resolve) => {
      const c = createConnection({ port, host: "127.0.0.1" });
      c.once("connect", () => {
        c.destroy();
        resolve(true);
      });
      c.once("error", () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nginx did not listen on ${port}: ${log()}`);
}

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    request(url, { headers, agent: false }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    })
      .on("error", reject)
      .end();
  });
}

function post(url: string, bytes: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: "POST",
        agent: false,
        headers: { "content-type": "application/octet-stream", "content-length": String(bytes) },
      },
      (res) => {
        let body = "";
        res.on("data", (c: Buffer) => {
          body += c.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    // nginx answers 413 from the Content-Length and may close before the body is sent.
    req.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "EPIPE" && err.code !== "ECONNRESET") reject(err);
    });
    req.end(Buffer.alloc(bytes, 0x61));
  });
}

/** The response's first body bytes, which must come before the stream ends (it never does). */
function firstChunk(url: string, timeoutMs = 3000): Promise<{ headers: string; chunk: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      res.once("data", (c: Buffer) => {
        clearTimeout(timer);
        resolve({ headers: JSON.stringify(res.headers), chunk: c.toString() });
        req.destroy();
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no data from ${url} within ${timeoutMs} ms (buffered?)`));
    }, timeoutMs);
    req.on("error", (err) => {
      if (!(err as NodeJS.ErrnoException).code?.startsWith("ECONNRESET")) reject(err);
    });
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------
// Docker Compose

/** Ajv (draft-07) validator of the vendored Compose Specification schema. */
function composeValidator() {
  const { $schema: _dialect, ...schema } = JSON.parse(read("deploy/schemas/compose-spec.json")) as Json;
  // "$schema" names draft-07 by an https URL Ajv does not know; draft-07 is Ajv's own default.
  const ajv = new Ajv({ allErrors: true, strict: false });
  return ajv.compile(schema);
}

const COMPOSE = parseYaml(read("deploy/compose.yaml")) as Json;

/** What the Compose schema cannot see: references between services, volumes, files, settings. */
function composeProblems(c: Json): string[] {
  const problems: string[] = [];
  const services = obj(c.services);
  const volumes = obj(c.volumes);
  const networks = obj(c.networks);
  for (const [name, raw] of Object.entries(services)) {
    const s = obj(raw);
    for (const dep of Object.keys(obj(s.depends_on)))
      if (!(dep in services)) problems.push(`${name}: depends_on unknown service ${dep}`);
    for (const v of arr(s.volumes)) {
      const source = String(v).split(":")[0];
      if (source.startsWith(".")) {
        if (!source.startsWith("./certs") && !existsSync(join(DEPLOY, source)))
          problems.push(`${name}: mounts missing ${source}`);
      } else if (!source.startsWith("/") && !(source in volumes)) {
        problems.push(`${name}: volume ${source} is not declared`);
      }
    }
    for (const n of arr(s.networks)) if (!(String(n) in networks)) problems.push(`${name}: network ${n}`);
  }
  const app = obj(services.app);
  const build = obj(app.build);
  if (!existsSync(join(DEPLOY, String(build.context ?? "."), String(build.dockerfile ?? "Dockerfile"))))
    problems.push("app: the Dockerfile is not where build: says");
  const env = obj(app.environment) as Record<string, string>;
  for (const [key, host] of [
    ["DATABASE_URL", "postgres"],
    ["REDIS_URL", "redis"],
  ]) {
    const value = env[key] ?? "";
    const url = new URL(value.replace(/\$\{[^}]*\}/g, "secret"));
    if (url.hostname !== host || !(host in services)) problems.push(`app: ${key} does not point at ${host}`);
  }
  // Several replicas: each its own scratch space (a tmpfs), never a named volume or a bind mount
  // that they would all share.
  const replicas = Number(obj(app.deploy).replicas ?? 1);
  if (!(replicas >= 2)) problems.push(`app: ${replicas} replica(s), not several`);
  const dataDir = env.MASKWATCH_DATA_DIR;
  for (const v of arr(app.volumes)) {
    const [source, target] = String(v).split(":");
    if (target === dataDir) problems.push(`app: ${dataDir} on ${source}, shared by every replica`);
  }
  if (!arr(app.tmpfs).some((t) => String(t).split(":")[0] === dataDir))
    problems.push(`app: ${dataDir} is not a tmpfs`);
  // The batch-job queue lives in Redis: it must survive a restart (append-only file).
  if (!arr(obj(services.redis).command).join(" ").includes("--appendonly yes"))
    problems.push("redis: no append-only file, so queued jobs would not survive a restart");
  const nginxOnApp = obj(obj(obj(services.nginx).depends_on).app);
  if (nginxOnApp.restart !== true)
    problems.push("nginx: not restarted with the app (it resolves app at start)");
  const health = arr(obj(app.healthcheck).test).join(" ");
  if (!/127\.0\.0\.1:8080\/(ready|health)/.test(health))
    problems.push("app: healthcheck is not /ready or /health");
  const unknown = unknownEnv(Object.keys(env));
  if (unknown.length) problems.push(`app: unknown settings ${unknown.join(", ")}`);
  // The app's settings as it would see them: environment + the example env file, interpolated.
  const example = envFile(read("deploy/maskwatch.env.example")).values;
  const merged = Object.fromEntries(
    Object.entries({ ...example, ...env }).map(([k, v]) => [
      k,
      String(v).replace(/\$\{[^}]*\}/g, "0123abcd"),
    ]),
  );
  try {
    const config = loadConfig(merged);
    if (config.dataDir !== "/data") problems.push("app: MASKWATCH_DATA_DIR is not /data");
  } catch (err) {
    problems.push(`app: ${(err as Error).message}`);
  }
  return problems;
}

describe("compose.yaml", () => {
  const validate = composeValidator();

  test("valid against the Compose Specification schema", () => {
    const ok = validate(COMPOSE);
    assert.ok(ok, JSON.stringify(validate.errors, null, 2));
  });

  test("the schema rejects broken copies (unknown service key, wrong type)", () => {
    const unknownKey = structuredClone(COMPOSE);
    obj(obj(unknownKey.services).app).restart_policy = "always";
    assert.equal(validate(unknownKey), false);
    assert.ok(
      validate.errors?.some(
        (e) => e.keyword === "additionalProperties" && e.instancePath === "/services/app",
      ),
    );
    const wrongType = structuredClone(COMPOSE);
    obj(obj(obj(wrongType.services).postgres).healthcheck).interval = 10;
    assert.equal(validate(wrongType), false);
    const badDepends = structuredClone(COMPOSE);
    obj(obj(obj(badDepends.services).app).depends_on).postgres = { condition: "healthy" };
    assert.equal(validate(badDepends), false);
  });

  test("services, volumes, files and the app's settings fit together", () => {
    assert.deepEqual(composeProblems(COMPOSE), []);
    const services = obj(COMPOSE.services);
    assert.deepEqual(Object.keys(services).sort(), ["app", "nginx", "postgres", "redis"]);
    assert.match(String(obj(services.postgres).image), /^postgres:16\b/);
    assert.match(String(obj(services.redis).image), /^redis:7\b/);
    assert.deepEqual(arr(obj(services.nginx).ports), ["80:80", "443:443"]);
    for (const name of ["app", "postgres", "redis"]) assert.ok(obj(services[name]).healthcheck, name);
    assert.equal(obj(services.app).restart, "unless-stopped");
    assert.ok(!("ports" in obj(services.app)), "the app is reached through nginx only");
    assert.ok(Number(obj(obj(services.app).deploy).replicas) >= 2, "several app replicas");
    assert.ok(!("container_name" in obj(services.app)), "a container_name allows one replica only");
  });

  test("the consistency check catches what the schema cannot", () => {
    const broken = structuredClone(COMPOSE);
    const app = obj(obj(broken.services).app);
    obj(app.environment).REDIS_URL = "redis://cache:6379/0";
    obj(app.environment).MASKWATCH_TRUSTPROXY = "on";
    app.volumes = ["maskwatch-dat:/data"];
    app.tmpfs = ["/tmp"];
    app.deploy = { replicas: 1 };
    delete obj(obj(broken.services).redis).command;
    delete obj(obj(obj(obj(broken.services).nginx).depends_on).app).restart;
    const problems = composeProblems(broken);
    for (const what of [
      "REDIS_URL does not point at redis",
      "MASKWATCH_TRUSTPROXY",
      "volume maskwatch-dat is not declared",
      "/data on maskwatch-dat, shared by every replica",
      "/data is not a tmpfs",
      "1 replica(s)",
      "append-only",
      "nginx: not restarted",
    ])
      assert.ok(
        problems.some((p) => p.includes(what)),
        `${what} not reported: ${problems.join("; ")}`,
      );
    assert.equal(problems.length, 8, problems.join("\n"));
  });
});

// ---------------------------------------------------------------------------------------------
// Kubernetes

const K8S = join(DEPLOY, "k8s");
/** The overlay of the base with one pod and SQLite on a volume. */
const K8S_SQLITE = join(DEPLOY, "k8s-sqlite");
const KUSTOMIZATION = parseYaml(read("deploy/k8s/kustomization.yaml")) as Json;
const KUBECTL = findTool("kubectl");
const KUBECTL_SKIP = KUBECTL ? null : "kubectl is not installed (it renders the overlay's patches)";

/** The base as applied: `kubectl kustomize` when kubectl is here, else the listed files as they are. */
function renderedBase(): { docs: Json[]; how: string } {
  if (KUBECTL) return { docs: kustomize(K8S), how: "kubectl kustomize" };
  const docs = arr(KUSTOMIZATION.resources).flatMap((f) =>
    parseAllDocuments(read("deploy/k8s", String(f))).map((d) => d.toJSON() as Json),
  );
  return { docs, how: "the kustomization's files (kubectl absent)" };
}

function kustomize(dir: string): Json[] {
  const r = spawnSync(KUBECTL!, ["kustomize", dir], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return parseAllDocuments(r.stdout).map((d) => d.toJSON() as Json);
}

type Validating = new (data: unknown) => { validate(): void };
/** The kubernetes-models class for apiVersion/kind, or null when the package is not installed. */
async function k8sModel(apiVersion: string, kind: string): Promise<Validating | null> {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const specifier = `kubernetes-models/${group ? `${group}/` : ""}${version}/${kind}`;
  try {
    const mod = (await import(specifier)) as Record<string, Validating>;
    return mod[kind] ?? null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_MODULE_NOT_FOUND") return null;
    throw err;
  }
}

async function schemaProblems(doc: Json): Promise<string[]> {
  const Model = await k8sModel(String(doc.apiVersion), String(doc.kind));
  if (!Model) return [`${doc.apiVersion} ${doc.kind}: no schema`];
  try {
    new Model(doc).validate();
    return [];
  } catch (err) {
    return [`${doc.kind}/${obj(doc.metadata).name}: ${(err as Error).message}`];
  }
}

const byKind = (docs: Json[], kind: string) => docs.filter((d) => d.kind === kind);

/** What a fieldRef gives a pod, for expanding $(…) references to it. */
const FIELD_SAMPLES: Record<string, string> = {
  "status.podIP": "10.244.1.7",
  "metadata.name": "maskwatch-7d9f8-abcde",
  "metadata.namespace": "maskwatch",
};

/**
 * A container's `env` as the process gets it: Kubernetes expands `$(NAME)` in a value when NAME is
 * defined above it (else leaves it as written). `own`: names used only inside such expansions, the
 * pod's own (POD_IP), which the app need not read.
 */
function containerEnv(c: Json): { values: Record<string, string>; own: Set<string>; problems: string[] } {
  const values: Record<string, string> = {};
  const referenced = new Set<string>();
  const problems: string[] = [];
  for (const raw of arr(c.env)) {
    const e = obj(raw);
    const name = String(e.name);
    const field = String(obj(obj(e.valueFrom).fieldRef).fieldPath ?? "");
    if (e.valueFrom !== undefined) {
      values[name] = FIELD_SAMPLES[field] ?? "from-elsewhere";
      continue;
    }
    values[name] = String(e.value ?? "").replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, ref: string) => {
      referenced.add(ref);
      if (ref in values) return values[ref];
      problems.push(`env ${name}: $(${ref}) is not defined above it, so it is not expanded`);
      return whole;
    });
  }
  return { values, own: referenced, problems };
}

type K8sShape = "replicas" | "single";

/**
 * References between the objects, and the app's ports, probes, paths and settings. `replicas`: the
 * base, several pods sharing PostgreSQL and Redis; `single`: the SQLite overlay, one pod on a volume.
 */
function k8sProblems(docs: Json[], secret: Json, shape: K8sShape = "replicas"): string[] {
  const problems: string[] = [];
  const one = (kind: string): Json => {
    const found = byKind(docs, kind);
    if (found.length !== 1) problems.push(`${found.length} ${kind} objects`);
    return found[0] ?? {};
  };
  const deploy = one("Deployment");
  const service = one("Service");
  const ingress = one("Ingress");
  const hpa = one("HorizontalPodAutoscaler");
  const pdb = one("PodDisruptionBudget");
  const config = one("ConfigMap");
  const pvcs = byKind(docs, "PersistentVolumeClaim");
  const name = (o: Json) => String(obj(o.metadata).name);
  const spec = obj(deploy.spec);
  const pod = obj(obj(spec.template).spec);
  const podLabels = obj(obj(obj(spec.template).metadata).labels);
  const matches = (selector: Json) =>
    Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => podLabels[k] === v);
  if (!matches(obj(obj(spec.selector).matchLabels)))
    problems.push("Deployment: selector does not match the pods");
  if (!matches(obj(obj(service.spec).selector))) problems.push("Service: selector does not match the pods");
  if (!matches(obj(obj(obj(pdb.spec).selector).matchLabels))) problems.push("PDB: selector does not match");
  const containers = arr(pod.containers).map(obj);
  const c = containers[0] ?? {};
  const ports = arr(c.ports).map(obj);
  const http = ports.find((p) => p.name === "http");
  if (http?.containerPort !== DEFAULTS.port) problems.push(`container port is not ${DEFAULTS.port}`);
  const data = obj(config.data) as Record<string, string>;
  if (data.PORT !== undefined && Number(data.PORT) !== http?.containerPort)
    problems.push("ConfigMap PORT differs from the container port");
  const probe = (p: unknown) => obj(obj(p).httpGet);
  const portOk = (p: unknown) =>
    ports.some((x) => x.name === probe(p).port || x.containerPort === probe(p).port);
  if (probe(c.livenessProbe).path !== "/health" || !portOk(c.livenessProbe))
    problems.push("liveness is not /health");
  if (probe(c.readinessProbe).path !== "/ready" || !portOk(c.readinessProbe))
    problems.push("readiness is not /ready");
  if (!["/health", "/ready"].includes(String(probe(c.startupProbe).path))) problems.push("no startup probe");
  const res = obj(c.resources);
  for (const k of ["requests", "limits"])
    for (const r of ["cpu", "memory"]) if (!obj(res[k])[r]) problems.push(`no ${k}.${r}`);
  const podSec = obj(pod.securityContext);
  const sec = obj(c.securityContext);
  if (podSec.runAsNonRoot !== true && sec.runAsNonRoot !== true) problems.push("may run as root");
  if (Number(podSec.runAsUser ?? sec.runAsUser) !== DOCKER_UID)
    problems.push(`uid is not the image's ${DOCKER_UID}`);
  if (sec.readOnlyRootFilesystem !== true) problems.push("root filesystem is writable");
  if (sec.allowPrivilegeEscalation !== false) problems.push("privilege escalation allowed");
  const volumes = Object.fromEntries(arr(pod.volumes).map((v) => [obj(v).name, obj(v)]));
  const mounts = Object.fromEntries(arr(c.volumeMounts).map((m) => [obj(m).mountPath, String(obj(m).name)]));
  if (!obj(volumes[mounts["/tmp"]]).emptyDir) problems.push("/tmp is not an emptyDir");
  const dataDir = data.MASKWATCH_DATA_DIR;
  const dataVolume = obj(volumes[mounts[dataDir]]);
  const envFrom = arr(c.envFrom).map(obj);
  if (!envFrom.some((e) => obj(e.configMapRef).name === name(config))) problems.push("ConfigMap not used");
  if (!envFrom.some((e) => obj(e.secretRef).name === name(secret))) problems.push("Secret not used");
  const servicePort = arr(obj(service.spec).ports)
    .map(obj)
    .find((p) => p.targetPort === http?.name || p.targetPort === http?.containerPort);
  if (!servicePort) problems.push("Service does not target the container port");
  for (const rule of arr(obj(ingress.spec).rules))
    for (const path of arr(obj(obj(rule).http).paths)) {
      const backend = obj(obj(obj(path).backend).service);
      if (backend.name !== name(service) || obj(backend.port).name !== servicePort?.name)
        problems.push("Ingress backend is not the Service's port");
    }
  const notes = obj(obj(ingress.metadata).annotations) as Record<string, string>;
  const body = nginxSize(notes["nginx.ingress.kubernetes.io/proxy-body-size"] ?? "1m");
  const limit = Number(data.MASKWATCH_MAX_UPLOAD_BYTES ?? DEFAULTS.maxUploadBytes);
  if (body < Math.ceil(limit * 1.4) + 4096) problems.push("Ingress proxy-body-size is below the app's limit");
  if (notes["nginx.ingress.kubernetes.io/proxy-buffering"] !== "off")
    problems.push("Ingress buffers SSE/MJPEG");
  if (Number(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) < 3600)
    problems.push("Ingress timeout");
  if (Object.keys(notes).some((k) => /affinity|upstream-hash-by/.test(k)))
    problems.push("Ingress pins clients to pods (any pod serves any request)");
  const target = obj(obj(hpa.spec).scaleTargetRef);
  if (target.kind !== "Deployment" || target.name !== name(deploy))
    problems.push("HPA does not scale the Deployment");
  if (hpa.apiVersion !== "autoscaling/v2") problems.push("HPA is not autoscaling/v2");
  if (!arr(obj(hpa.spec).metrics).some((m) => obj(obj(m).resource).name === "cpu"))
    problems.push("HPA not on CPU");
  const minReplicas = Number(obj(hpa.spec).minReplicas ?? 1);
  const maxReplicas = Number(obj(hpa.spec).maxReplicas);
  if (!(maxReplicas >= minReplicas)) problems.push("HPA maxReplicas is below minReplicas");
  if (spec.replicas !== undefined) problems.push("Deployment sets replicas, which the HPA manages");
  const strategy = obj(spec.strategy);
  const pdbSpec = obj(pdb.spec);
  const sleep = Number(
    arr(obj(obj(obj(c.lifecycle).preStop).exec).command)
      .map(String)
      .find((a) => /^\d+$/.test(a)) ?? 0,
  );
  // The server's drain after SIGTERM gets 30 s everywhere (compose, systemd); Kubernetes counts the
  // preStop sleep in the grace period as well.
  if (Number(pod.terminationGracePeriodSeconds ?? 30) < sleep + 30)
    problems.push(`terminationGracePeriodSeconds leaves under 30 s after the ${sleep} s preStop sleep`);
  // The settings as the pod gets them must pass the app's own validation.
  const own = containerEnv(c);
  problems.push(...own.problems);
  const env = { ...data, ...(obj(secret.stringData) as Record<string, string>), ...own.values };
  const unknown = unknownEnv(Object.keys(env).filter((n) => !own.own.has(n)));
  if (unknown.length) problems.push(`unknown settings ${unknown.join(", ")}`);
  let app: ReturnType<typeof loadConfig> | undefined;
  try {
    app = loadConfig(env);
  } catch (err) {
    problems.push((err as Error).message);
  }
  if (shape === "replicas") {
    // Several pods: PostgreSQL and Redis shared, no volume shared, each pod reachable by its IP.
    if (pvcs.length) problems.push("a PersistentVolumeClaim in the base: the pods share no volume");
    if (!dataDir || !dataVolume.emptyDir) problems.push("MASKWATCH_DATA_DIR is not an emptyDir (scratch)");
    const rolling = obj(strategy.rollingUpdate);
    if (strategy.type !== "RollingUpdate" || !/^0%?$/.test(String(rolling.maxUnavailable)))
      problems.push("Deployment is not RollingUpdate with maxUnavailable 0");
    else if (!(Number.parseInt(String(rolling.maxSurge), 10) >= 1))
      problems.push("RollingUpdate maxSurge is 0");
    if (!(minReplicas >= 2)) problems.push(`HPA minReplicas ${minReplicas}: fewer than 2`);
    const minAvailable = Number(pdbSpec.minAvailable);
    if (!(minAvailable >= 1 && minAvailable < minReplicas))
      problems.push("PDB minAvailable is not at least 1 and under the HPA's minReplicas");
    // Settings the app refused are reported above already.
    const ip = arr(c.env)
      .map(obj)
      .find((e) => obj(obj(e.valueFrom).fieldRef).fieldPath === "status.podIP");
    const advertise = app?.advertiseUrl ? new URL(app.advertiseUrl) : undefined;
    if (app) {
      if (!app.redisUrl) problems.push("no REDIS_URL: the pods would not act as one");
      if (!/^postgres(ql)?:/.test(app.databaseUrl ?? ""))
        problems.push("DATABASE_URL is not PostgreSQL: SQLite is one process only");
      if (!ip || !advertise || advertise.hostname !== FIELD_SAMPLES["status.podIP"])
        problems.push("MASKWATCH_ADVERTISE_URL is not the pod's IP (fieldRef status.podIP)");
      else if (Number(advertise.port || 80) !== http?.containerPort)
        problems.push("MASKWATCH_ADVERTISE_URL is not on the container port");
    }
  } else {
    // One pod with SQLite on a ReadWriteOnce volume: never two at once.
    const pvc = pvcs[0] ?? {};
    if (pvcs.length !== 1 || obj(dataVolume.persistentVolumeClaim).claimName !== name(pvc))
      problems.push("MASKWATCH_DATA_DIR is not on the PVC");
    if (strategy.type !== "Recreate")
      problems.push("Deployment is not Recreate: two pods would write SQLite");
    if (maxReplicas !== 1) problems.push(`HPA maxReplicas ${maxReplicas}: SQLite is one process only`);
    if (Number(pdbSpec.minAvailable ?? 0) >= 1)
      problems.push("PDB minAvailable blocks every drain of one pod");
    if (app?.databaseUrl) problems.push("DATABASE_URL set: the SQLite overlay is for no PostgreSQL");
  }
  return problems;
}

/** A copy of the example Secret as the SQLite overlay wants it: no PostgreSQL, no Redis. */
function sqliteSecret(secret: Json): Json {
  const copy = structuredClone(secret);
  delete obj(copy.stringData).DATABASE_URL;
  delete obj(copy.stringData).REDIS_URL;
  return copy;
}

/** The Deployment's first container, for editing broken copies. */
const containerOf = (docs: Json[]) =>
  obj(arr(obj(obj(obj(byKind(docs, "Deployment")[0].spec).template).spec).containers)[0]);

describe("Kubernetes manifests", () => {
  const { docs, how } = renderedBase();
  const secret = parseYaml(read("deploy/k8s/secret.example.yaml")) as Json;

  test(`the kustomization (${how}): files, kinds, and the example Secret kept out`, () => {
    const resources = arr(KUSTOMIZATION.resources).map(String);
    for (const f of resources) assert.ok(existsSync(join(K8S, f)), f);
    assert.ok(!resources.includes("secret.example.yaml"), "the example Secret must not be applied");
    const kinds = docs.map((d) => `${d.apiVersion} ${d.kind}`).sort();
    for (const k of [
      "apps/v1 Deployment",
      "autoscaling/v2 HorizontalPodAutoscaler",
      "networking.k8s.io/v1 Ingress",
      "policy/v1 PodDisruptionBudget",
      "v1 ConfigMap",
      "v1 Service",
    ])
      assert.ok(kinds.includes(k), `no ${k}`);
    assert.ok(!docs.some((d) => d.kind === "Secret"), "a Secret in the base");
    const values = Object.values(obj(secret.stringData)).map(String);
    assert.ok(values.length >= 4 && values.every((v) => v.includes("CHANGE_ME")), "placeholders only");
  });

  test("valid against the Kubernetes API schemas (kubernetes-models)", async (t) => {
    if (!K8S_MODELS) return t.skip(unlessCI(`kubernetes-models is not installed: ${K8S_MODELS_SKIP_HINT}`));
    for (const doc of [...docs, secret]) assert.deepEqual(await schemaProblems(doc), [], String(doc.kind));
  });

  test('the schemas reject broken copies (replicas: "two", a string port, a missing selector)', async (t) => {
    if (!K8S_MODELS) return t.skip(unlessCI(`kubernetes-models is not installed: ${K8S_MODELS_SKIP_HINT}`));
    const deploy = structuredClone(byKind(docs, "Deployment")[0]);
    obj(deploy.spec).replicas = "two";
    assert.match((await schemaProblems(deploy)).join(), /replicas must be integer/);
    const service = structuredClone(byKind(docs, "Service")[0]);
    obj(arr(obj(service.spec).ports)[0]).port = "eighty";
    assert.match((await schemaProblems(service)).join(), /port must be integer/);
    const hpa = structuredClone(byKind(docs, "HorizontalPodAutoscaler")[0]);
    delete obj(hpa.spec).maxReplicas;
    assert.match((await schemaProblems(hpa)).join(), /maxReplicas/);
  });

  test("objects refer to each other, and to the app's port, probes, data folder and settings", () => {
    assert.deepEqual(k8sProblems(docs, secret), []);
  });

  test("several pods: HPA from 2, RollingUpdate, emptyDir, the pod's IP advertised, Redis and PostgreSQL", () => {
    const deploy = byKind(docs, "Deployment")[0];
    const hpa = obj(byKind(docs, "HorizontalPodAutoscaler")[0].spec);
    assert.ok(Number(hpa.minReplicas) >= 2 && Number(hpa.maxReplicas) > Number(hpa.minReplicas));
    assert.equal(obj(obj(deploy.spec).strategy).type, "RollingUpdate");
    const env = arr(containerOf(docs).env).map(obj);
    assert.ok(env.some((e) => e.name === "POD_IP"));
    assert.ok(env.some((e) => e.name === "MASKWATCH_ADVERTISE_URL"));
    assert.ok(!docs.some((d) => d.kind === "PersistentVolumeClaim"));
    // POD_IP is not a setting: it passes the name check only as an expansion inside another value.
    assert.ok(!APP_ENV.has("POD_IP"));
  });

  test("the consistency check catches broken copies", () => {
    const broken = structuredClone(docs);
    const c = containerOf(broken);
    obj(obj(c.readinessProbe).httpGet).path = "/healthz";
    obj(c.securityContext).readOnlyRootFilesystem = false;
    obj(obj(byKind(broken, "Service")[0].spec).selector)["app.kubernetes.io/name"] = "maskwach";
    obj(byKind(broken, "ConfigMap")[0].data).MASKWATCH_WORKERS = "lots";
    assert.equal(k8sProblems(broken, secret).length, 4, k8sProblems(broken, secret).join("\n"));
  });

  test("the check catches a single-replica shape, or a broken pod address, in the base", () => {
    const cases: [string, (d: Json[]) => void, RegExp, Json?][] = [
      [
        "HPA minReplicas 1",
        (d) => {
          obj(byKind(d, "HorizontalPodAutoscaler")[0].spec).minReplicas = 1;
        },
        /minReplicas 1: fewer than 2/,
      ],
      [
        "Recreate",
        (d) => {
          obj(byKind(d, "Deployment")[0].spec).strategy = { type: "Recreate" };
        },
        /not RollingUpdate/,
      ],
      [
        "maxUnavailable 1",
        (d) => {
          obj(obj(obj(byKind(d, "Deployment")[0].spec).strategy).rollingUpdate).maxUnavailable = 1;
        },
        /maxUnavailable 0/,
      ],
      [
        "maxSurge 0",
        (d) => {
          obj(obj(obj(byKind(d, "Deployment")[0].spec).strategy).rollingUpdate).maxSurge = 0;
        },
        /maxSurge is 0/,
      ],
      [
        "replicas fixed in the Deployment",
        (d) => {
          obj(byKind(d, "Deployment")[0].spec).replicas = 2;
        },
        /sets replicas/,
      ],
      [
        "a PVC for /data",
        (d) => {
          const pod = obj(obj(obj(byKind(d, "Deployment")[0].spec).template).spec);
          pod.volumes = arr(pod.volumes).map((v) =>
            obj(v).name === "data"
              ? { name: "data", persistentVolumeClaim: { claimName: "maskwatch-data" } }
              : v,
          );
          d.push({ apiVersion: "v1", kind: "PersistentVolumeClaim", metadata: { name: "maskwatch-data" } });
        },
        /PersistentVolumeClaim in the base[\s\S]*not an emptyDir/,
      ],
      [
        "PDB minAvailable 2",
        (d) => {
          obj(byKind(d, "PodDisruptionBudget")[0].spec).minAvailable = 2;
        },
        /PDB minAvailable/,
      ],
      [
        "no REDIS_URL",
        () => {},
        /no REDIS_URL/,
        (() => {
          const s = structuredClone(secret);
          delete obj(s.stringData).REDIS_URL;
          return s;
        })(),
      ],
      [
        "SQLite",
        () => {},
        /not PostgreSQL/,
        (() => {
          const s = structuredClone(secret);
          delete obj(s.stringData).DATABASE_URL;
          return s;
        })(),
      ],
      [
        "POD_IP defined below its use",
        (d) => {
          const c = containerOf(d);
          c.env = arr(c.env).reverse();
        },
        /\$\(POD_IP\) is not defined above it/,
      ],
      [
        "the pod's name instead of its IP",
        (d) => {
          const ip = arr(containerOf(d).env).map(obj)[0];
          obj(obj(ip.valueFrom).fieldRef).fieldPath = "metadata.name";
        },
        /not the pod's IP/,
      ],
      [
        "the wrong port",
        (d) => {
          const advertise = arr(containerOf(d).env)
            .map(obj)
            .find((e) => e.name === "MASKWATCH_ADVERTISE_URL")!;
          advertise.value = "http://$(POD_IP):9090";
        },
        /not on the container port/,
      ],
      [
        "POD_IP used by nothing, and a misspelt setting",
        (d) => {
          const c = containerOf(d);
          c.env = [
            ...arr(c.env).map((e) =>
              obj(e).name === "MASKWATCH_ADVERTISE_URL" ? { ...obj(e), value: "http://10.0.0.9:8080" } : e,
            ),
            { name: "MASKWATCH_LEASE_TIME", value: "5000" },
          ];
        },
        /unknown settings POD_IP, MASKWATCH_LEASE_TIME/,
      ],
      [
        "a short grace period",
        (d) => {
          obj(obj(obj(byKind(d, "Deployment")[0].spec).template).spec).terminationGracePeriodSeconds = 30;
        },
        /terminationGracePeriodSeconds/,
      ],
      [
        "sticky sessions at the Ingress",
        (d) => {
          obj(obj(byKind(d, "Ingress")[0].metadata).annotations)["nginx.ingress.kubernetes.io/affinity"] =
            "cookie";
        },
        /pins clients/,
      ],
    ];
    for (const [what, breakIt, expected, brokenSecret] of cases) {
      const broken = structuredClone(docs);
      breakIt(broken);
      const problems = k8sProblems(broken, brokenSecret ?? secret);
      assert.match(problems.join("\n"), expected, `${what}: ${problems.join("; ") || "no problem reported"}`);
    }
  });
});

describe("the SQLite overlay (deploy/k8s-sqlite)", { skip: skipUnlessCI(KUBECTL_SKIP ?? false) }, () => {
  const docs = KUBECTL ? kustomize(K8S_SQLITE) : [];
  const secret = sqliteSecret(parseYaml(read("deploy/k8s/secret.example.yaml")) as Json);

  test("one pod, Recreate, /data on a ReadWriteOnce PVC, a drain never blocked", async (t) => {
    assert.deepEqual(k8sProblems(docs, secret, "single"), []);
    const pvc = byKind(docs, "PersistentVolumeClaim")[0];
    assert.deepEqual(arr(obj(pvc.spec).accessModes), ["ReadWriteOnce"]);
    assert.ok(docs.every((d) => obj(d.metadata).namespace === "maskwatch" || d.kind === "Namespace"));
    if (!K8S_MODELS) return t.skip(unlessCI(`kubernetes-models is not installed: ${K8S_MODELS_SKIP_HINT}`));
    for (const doc of docs) assert.deepEqual(await schemaProblems(doc), [], String(doc.kind));
  });

  test("the check catches a second pod, a rolling update, a blocking PDB, no PVC, or PostgreSQL", () => {
    const two = structuredClone(docs);
    obj(byKind(two, "HorizontalPodAutoscaler")[0].spec).maxReplicas = 2;
    assert.match(k8sProblems(two, secret, "single").join("\n"), /maxReplicas 2/);
    const rolling = structuredClone(docs);
    obj(byKind(rolling, "Deployment")[0].spec).strategy = { type: "RollingUpdate" };
    assert.match(k8sProblems(rolling, secret, "single").join("\n"), /not Recreate/);
    const blocking = structuredClone(docs);
    obj(byKind(blocking, "PodDisruptionBudget")[0].spec).minAvailable = 1;
    assert.match(k8sProblems(blocking, secret, "single").join("\n"), /blocks every drain/);
    const scratch = structuredClone(docs);
    const pod = obj(obj(obj(byKind(scratch, "Deployment")[0].spec).template).spec);
    pod.volumes = arr(pod.volumes).map((v) => (obj(v).name === "data" ? { name: "data", emptyDir: {} } : v));
    assert.match(k8sProblems(scratch, secret, "single").join("\n"), /not on the PVC/);
    const pg = parseYaml(read("deploy/k8s/secret.example.yaml")) as Json;
    assert.match(k8sProblems(docs, pg, "single").join("\n"), /DATABASE_URL set/);
    // The base's shape is not the overlay's, and the other way round.
    assert.ok(k8sProblems(docs, secret, "replicas").length > 0);
  });
});

// ---------------------------------------------------------------------------------------------
// Dockerfile (no Docker engine here: a static check)

interface Instruction {
  op: string;
  args: string;
  line: number;
}
interface Stage {
  name: string;
  image: string;
  workdir: string;
  copiedContext: boolean;
  produces: Set<string>;
  instructions: Instruction[];
}

function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (/^\s*(#|$)/.test(lines[i])) continue;
    const start = i;
    let logical = lines[i];
    while (/\\\s*$/.test(logical) && i + 1 < lines.length) {
      i++;
      if (/^\s*#/.test(lines[i])) continue;
      logical = `${logical.replace(/\\\s*$/, " ")}${lines[i]}`;
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(logical);
    if (!m) continue;
    const ins = { op: m[1].toUpperCase(), args: m[2].trim(), line: start + 1 };
    if (ins.op === "FROM") {
      const f = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?/i.exec(ins.args)!;
      stages.push({
        name: f[2] ?? String(stages.length),
        image: f[1],
        workdir: "/",
        copiedContext: false,
        produces: new Set(),
        instructions: [],
      });
    }
    stages.at(-1)?.instructions.push(ins);
  }
  return stages;
}

/** .dockerignore patterns as regular expressions over context-relative paths. */
function dockerignore(text: string): RegExp[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#") && !l.startsWith("!"))
    .map((p) => {
      const re = p
        .replace(/\/$/, "")
        .replace(/[.+^${}()|[\]]/g, "\\$&")
        .replace(/\*\*\//g, "\u0000")
        .replace(/\*/g, "[^/]*")
        .replace(/\?/g, "[^/]")
        .replaceAll("\u0000", "(?:.*/)?");
      return new RegExp(`^${re}(?:/.*)?$`);
    });
}

function dockerfileProblems(text: string, ignoreText: string): string[] {
  const problems: string[] = [];
  const ignored = dockerignore(ignoreText);
  const isIgnored = (p: string) => ignored.some((re) => re.test(p));
  const stages = parseDockerfile(text);
  const postinstall = PACKAGE.scripts.postinstall ?? "";
  const viteOut = /outDir:\s*"([^"]+)"/.exec(read("web/vite.config.ts"))?.[1];
  for (const [index, stage] of stages.entries()) {
    for (const ins of stage.instructions) {
      const where = `line ${ins.line}`;
      if (ins.op === "WORKDIR") stage.workdir = ins.args;
      if (ins.op === "RUN" && /\bnpm ci\b/.test(ins.args)) {
        stage.produces.add("node_modules");
        // npm ci runs the postinstall: the console build and the model pull.
        if (/build:web/.test(postinstall) && PACKAGE.scripts["build:web"] && viteOut)
          stage.produces.add(`web/${viteOut}`);
        if (/models pull --defaults/.test(postinstall)) stage.produces.add(".cache/models");
      }
      if (ins.op !== "COPY" && ins.op !== "ADD") continue;
      const flags = [...ins.args.matchAll(/--(\w+)=(\S+)/g)].map((m) => [m[1], m[2]]);
      const from = flags.find(([k]) => k === "from")?.[1];
      const paths = ins.args
        .replace(/--\w+=\S+\s*/g, "")
        .split(/\s+/)
        .filter(Boolean);
      const sources = paths.slice(0, -1);
      if (from === undefined) {
        for (const src of sources) {
          if (src === ".") {
            if (paths.at(-1) === "." || paths.at(-1) === "./") stage.copiedContext = true;
            continue;
          }
          if (!existsSync(join(REPO, src))) problems.push(`${where}: COPY ${src}: not in the repository`);
          else if (isIgnored(src)) problems.push(`${where}: COPY ${src}: excluded by .dockerignore`);
        }
        continue;
      }
      const source = stages.slice(0, index).find((s) => s.name === from);
      if (!source) {
        problems.push(`${where}: COPY --from=${from}: no earlier stage of that name`);
        continue;
      }
      for (const src of sources) {
        const prefix = `${source.workdir.replace(/\/$/, "")}/`;
        const rel = src.startsWith(prefix) ? src.slice(prefix.length) : null;
        const made = rel !== null && [...source.produces].some((p) => rel === p || rel.startsWith(`${p}/`));
        const fromContext =
          rel !== null && source.copiedContext && existsSync(join(REPO, rel)) && !isIgnored(rel);
        if (!made && !fromContext) problems.push(`${where}: COPY --from=${from} ${src}: not in that stage`);
      }
    }
  }
  const final = stages.at(-1);
  if (!final) return ["no FROM"];
  const last = (op: string) => final.instructions.filter((i) => i.op === op).at(-1)?.args;
  const user = last("USER");
  if (!user || /^(root|0)(:|$)/.test(user)) problems.push(`final stage runs as ${user ?? "root (no USER)"}`);
  const health = last("HEALTHCHECK");
  if (!health || /^NONE\b/.test(health) || !health.includes("/health"))
    problems.push("no HEALTHCHECK on /health");
  if (
    !final.instructions.some((i) => i.op === "EXPOSE" && i.args.split(/\s+/).includes(String(DEFAULTS.port)))
  )
    problems.push(`does not EXPOSE ${DEFAULTS.port}`);
  if (!/^node:20-bookworm-slim$|^node:\$\{NODE_VERSION\}-bookworm-slim$/.test(final.image))
    problems.push(`runtime image ${final.image} is not node:20-bookworm-slim`);
  const run = final.instructions.filter((i) => i.op === "RUN").map((i) => i.args);
  if (!run.some((r) => /apt-get install .*\bffmpeg\b/.test(r))) problems.push("no ffmpeg from Debian");
  const envs = final.instructions.filter((i) => i.op === "ENV").map((i) => i.args);
  const envNames = envs.flatMap((e) => [...e.matchAll(/([A-Z][A-Z0-9_]*)=/g)].map((m) => m[1]));
  const unknown = unknownEnv(envNames);
  if (unknown.length) problems.push(`unknown settings ${unknown.join(", ")}`);
  const dataDir = /MASKWATCH_DATA_DIR=(\S+)/.exec(envs.join(" "))?.[1];
  if (!dataDir || !last("VOLUME")?.includes(dataDir)) problems.push("MASKWATCH_DATA_DIR is not a VOLUME");
  const build = stages.find((s) => s.produces.has("node_modules"));
  const verify = build?.instructions.find((i) => /models verify/.test(i.args))?.args ?? "";
  const ids =
    verify
      .split(/models verify\s+/)[1]
      ?.split(/\s+/)
      .filter(Boolean)
      .sort() ?? [];
  const bundled = MODELS.filter((m) => m.bundled)
    .map((m) => m.id)
    .sort();
  if (JSON.stringify(ids) !== JSON.stringify(bundled))
    problems.push(`models verify ${ids} != the defaults ${bundled}`);
  return problems;
}

describe("Dockerfile (static: Docker is not needed)", () => {
  test("COPY sources exist, runs non-root, HEALTHCHECK /health, EXPOSE 8080, /data volume", () => {
    assert.deepEqual(dockerfileProblems(DOCKER_TEXT, DOCKERIGNORE), []);
    assert.ok(DOCKER_UID > 0, "USER is a numeric non-root uid (Kubernetes can check runAsNonRoot)");
  });

  test(".dockerignore keeps out installs, builds, state and secrets, but not the build's inputs", () => {
    const ignored = dockerignore(DOCKERIGNORE);
    for (const p of ["node_modules", "data", ".cache", "web/dist", "test-artifacts", ".git", ".env"])
      assert.ok(
        ignored.some((re) => re.test(p)),
        `${p} is not ignored`,
      );
    for (const p of ["package.json", "package-lock.json", "src/cli/main.ts", "web/index.html", "models"])
      assert.ok(!ignored.some((re) => re.test(p)), `${p} is ignored`);
  });

  test("the check rejects a broken copy (root, no HEALTHCHECK, missing and unknown sources)", () => {
    const broken = DOCKER_TEXT.replace("USER 10001:10001", "USER root")
      .replace(/^HEALTHCHECK[\s\S]*?\n(?=\S)/m, "")
      .replace("/app/web/dist", "/app/web/build")
      .replace("COPY --from=build /app/bin", "COPY --from=builder /app/bin")
      .replace("COPY . .", "COPY . .\nCOPY missing.txt ./");
    const problems = dockerfileProblems(broken, DOCKERIGNORE);
    for (const what of ["runs as root", "HEALTHCHECK", "web/build", "--from=builder", "missing.txt"])
      assert.ok(
        problems.some((p) => p.includes(what)),
        `${what} not reported: ${problems.join("; ")}`,
      );
    assert.ok(
      dockerfileProblems(DOCKER_TEXT, `${DOCKERIGNORE}\nsrc\n`).some((p) => /not in that stage/.test(p)),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// systemd

const SYSTEMD_ANALYZE = findTool("systemd-analyze");
const SYSTEMD_SKIP = SYSTEMD_ANALYZE ? null : "systemd-analyze is not installed (apt-get install -y systemd)";

describe("maskwatch.service", () => {
  const unit = read("deploy/maskwatch.service");

  test("directives the brief asks for", () => {
    for (const d of [
      "User=maskwatch",
      "EnvironmentFile=/etc/maskwatch/env",
      "NoNewPrivileges=yes",
      "ProtectSystem=strict",
      "PrivateTmp=yes",
      "Restart=on-failure",
      "KillSignal=SIGTERM",
    ])
      assert.match(unit, new RegExp(`^${d}$`, "m"), d);
    const data = /^Environment=MASKWATCH_DATA_DIR=(\S+)$/m.exec(unit)?.[1];
    assert.ok(data && new RegExp(`^ReadWritePaths=.*${data}`, "m").test(unit), "data folder is not writable");
    assert.ok(/^TimeoutStopSec=\d+s$/m.test(unit));
    assert.match(unit, /^ExecStart=\S*node \S*bin\/maskwatch\.js serve$/m);
  });

  test("systemd-analyze verify passes, and reports a broken copy", async (t) => {
    if (SYSTEMD_SKIP) return t.skip(unlessCI(SYSTEMD_SKIP));
    const verify = async (name: string, text: string) => {
      const file = join(work, name);
      await writeFile(file, text);
      const r = spawnSync(SYSTEMD_ANALYZE!, ["verify", file], { encoding: "utf8" });
      // Values it cannot parse are only "ignoring" warnings with status 0: any output fails.
      return {
        ok: r.status === 0 && `${r.stdout}${r.stderr}`.trim() === "",
        output: `${r.stdout}${r.stderr}`,
      };
    };
    const good = await verify("maskwatch.service", unit);
    assert.ok(good.ok, good.output);
    const bad = await verify(
      "broken.service",
      unit.replace("Restart=on-failure", "Restart=sometimes").replace("KillMode=mixed", "KillMode=gently"),
    );
    assert.ok(!bad.ok);
    assert.match(bad.output, /restart specifier/);
  });

  test("systemd-analyze security rates the hardening OK (and a copy without it UNSAFE)", async (t) => {
    if (SYSTEMD_SKIP) return t.skip(unlessCI(SYSTEMD_SKIP));
    const exposure = async (name: string, text: string) => {
      const file = join(work, name);
      await writeFile(file, text);
      const r = spawnSync(SYSTEMD_ANALYZE!, ["security", "--offline=true", "--no-pager", file], {
        encoding: "utf8",
      });
      const m = /Overall exposure level for \S+: ([\d.]+)/.exec(r.stdout);
      assert.ok(m, `${r.stdout}${r.stderr}`);
      return Number(m[1]);
    };
    const level = await exposure("maskwatch.service", unit);
    t.diagnostic(`exposure level ${level} (0 best, 10 worst)`);
    assert.ok(level <= 3, `exposure ${level}`);
    const soft = unit
      .split("\n")
      .filter(
        (l) =>
          !/^(NoNewPrivileges|Protect|Private|Restrict|Capability|SystemCall|Lock|Device|Remove|UMask)/.test(
            l,
          ),
      )
      .join("\n");
    assert.ok((await exposure("soft.service", soft)) > 7);
  });
});
