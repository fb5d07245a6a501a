/**
 * Several Maskwatch replicas on loopback, as deployed: real `maskwatch serve` processes sharing a
 * PostgreSQL database and a Redis (Debian's redis-server, started here), with Debian's nginx in front
 * using the shipped site (deploy/nginx). Used by the multi-instance test and `npm run loadtest`.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO } from "./paths.ts";

export const REDIS_SERVER = process.env.MASKWATCH_REDIS_SERVER ?? "redis-server";
export const NGINX = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => existsSync(p)) ?? "nginx";

/** Why a cluster cannot be started here, or null. */
export function clusterSkipReason(): string | null {
  if (spawnSync(REDIS_SERVER, ["--version"]).status !== 0)
    return "redis-server is not installed (apt-get install -y redis-server)";
  if (spawnSync(NGINX, ["-v"]).status !== 0) return "nginx is not installed (apt-get install -y nginx)";
  return null;
}

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

export interface Proc {
  name: string;
  port: number;
  url: string;
  child: ChildProcess;
  output(): string;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function launch(name: string, cmd: string, args: string[], port: number, env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keep = (d: Buffer) => {
    output = (output + d.toString()).slice(-20_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return { name, port, url: `http://127.0.0.1:${port}`, child, output: () => output, exited };
}

export async function stop(proc: Proc | undefined, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill(signal);
  const timer = setTimeout(() => proc.child.kill("SIGKILL"), 10_000);
  await proc.exited;
  clearTimeout(timer);
}

async function waitFor(what: string, proc: Proc, ok: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null)
      throw new Error(`${proc.name} exited before ${what}:\n${proc.output()}`);
    if (await ok().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${proc.name}: no ${what} within ${ms} ms:\n${proc.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A throwaway Redis on a free port, no persistence. */
export async function startRedis(dir: string): Promise<Proc & { redisUrl: string }> {
  const port = await freePort();
  await mkdir(dir, { recursive: true });
  const proc = launch(
    "redis",
    REDIS_SERVER,
    [
      ...["--port", String(port), "--bind", "127.0.0.1", "--dir", dir],
      ...["--save", "", "--appendonly", "no", "--protected-mode", "no"],
    ],
    port,
  );
  await waitFor("listening", proc, async () => proc.output().includes("Ready to accept connections"), 10_000);
  return { ...proc, redisUrl: `redis://127.0.0.1:${port}` };
}

/** `maskwatch serve` as a user runs it, ready (models loaded, database and Redis reachable). */
export async function startApp(name: string, env: Record<string, string>): Promise<Proc> {
  const port = await freePort();
  const proc = launch(name, process.execPath, [join(REPO, "bin/maskwatch.js"), "serve"], port, {
    PORT: String(port),
    HOST: "127.0.0.1",
    LOG_LEVEL: "info",
    MASKWATCH_REPLICA_ID: name,
    ...env,
  });
  await waitFor("/ready", proc, async () => (await fetch(`${proc.url}/ready`)).status === 200, 60_000);
  return proc;
}

/** nginx with the shipped plain-HTTP site, its upstream pointed at `apps`. */
export async function startNginx(dir: string, apps: readonly { port: number }[]): Promise<Proc> {
  const port = await freePort();
  await mkdir(join(dir, "snippets"), { recursive: true });
  // Started as root, nginx's workers run as another user: they spool request bodies to a folder they
  // can reach (a test's own temp folder is private to root).
  const t = await mkdtemp(join(tmpdir(), "maskwatch-nginx-"));
  await chmod(t, 0o777);
  const site = await readFile(join(REPO, "deploy/nginx/maskwatch-http.conf"), "utf8");
  const upstream = /^(\s*)server\s+127\.0\.0\.1:8080\b([^;]*);/m;
  const listen = /^(\s*listen\s+)127\.0\.0\.1:8081;/m;
  if (!upstream.test(site) || !listen.test(site))
    throw new Error("maskwatch-http.conf: upstream or listen moved");
  await writeFile(
    join(dir, "site.conf"),
    site
      .replace(upstream, (_, indent: string, rest: string) =>
        apps.map((a) => `${indent}server 127.0.0.1:${a.port}${rest};`).join("\n"),
      )
      .replace(listen, (_, head: string) => `${head}127.0.0.1:${port};`),
  );
  await writeFile(
    join(dir, "snippets/maskwatch-locations.conf"),
    await readFile(join(REPO, "deploy/nginx/snippets/maskwatch-locations.conf"), "utf8"),
  );
  await writeFile(
    join(dir, "nginx.conf"),
    [
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log warn;`,
      "daemon off;",
      "worker_processes 1;",
      "events { worker_connections 1024; }",
      "http {",
      `  access_log off;`,
      ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((k) => `  ${k}_temp_path ${t}/${k};`),
      "  include site.conf;",
      "}",
      "",
    ].join("\n"),
  );
  const proc = launch("nginx", NGINX, ["-p", `${dir}/`, "-c", join(dir, "nginx.conf")], port);
  void proc.exited.then(() => rm(t, { recursive: true, force: true }));
  await waitFor("/health through nginx", proc, async () => (await fetch(`${proc.url}/health`)).ok, 10_000);
  return proc;
}
