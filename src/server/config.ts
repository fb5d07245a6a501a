import { existsSync } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { config as loadDotenv } from "dotenv";
import type { AlertSettings } from "../alerts/service.ts";
import { parseAllowList } from "../streams/source-policy.ts";
import { DEFAULT_DETECTOR, DEFAULT_INPUT_SIZE, DETECTORS, INPUT_SIZE_RANGE } from "../vision/catalog.ts";

/** Everything the server reads from its environment, validated once at start. */
export interface Config {
  port: number;
  host: string;
  dataDir: string;
  databaseUrl: string | undefined;
  redisUrl: string | undefined;
  /** Bootstrap key from MASKWATCH_API_KEY (or the old service's APP_TOKEN). */
  apiKey: string | undefined;
  /** Wrong API keys one address may send per minute before it gets 429 (MASKWATCH_AUTH_FAILURE_LIMIT). */
  authFailureLimit: number;
  /** Longest an image may take in the inference pool, queue included (MASKWATCH_REQUEST_TIMEOUT_MS). */
  requestTimeoutMs: number;
  /** /metrics needs credentials (MASKWATCH_METRICS_AUTH=on). */
  metricsAuth: boolean;
  /** false only when MASKWATCH_AUTH=off. */
  auth: boolean;
  /** The console's first admin, made at start when there are no users (else a one-time setup code is logged). */
  admin: { username: string; password: string | undefined };
  /** Console sessions: idle lifetime, and the cookie's Secure flag (auto: when the request came over HTTPS). */
  session: { ttlHours: number; secureCookies: "auto" | "on" | "off"; loginAttempts: number };
  /** Fastify's trustProxy: believe X-Forwarded-For/-Proto from these peers (MASKWATCH_TRUST_PROXY). */
  trustProxy: boolean | string[];
  /** The built console (web/dist); served at / when present. */
  webDir: string;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  logFile: string | undefined;
  corsOrigins: string[];
  /** Requests per minute per API key, and per client IP. */
  rateLimitPerKey: number;
  rateLimitPerIp: number;
  maxUploadBytes: number;
  maxPixels: number;
  workers: number;
  threadsPerWorker: number;
  maxQueue: number;
  detector: string;
  /** Detector behind the compatible POST /detect (mtcnn: the replaced service's exact semantics). */
  compatDetector: string;
  /** Long side the maskwatch detector works at (MASKWATCH_INPUT_SIZE), handed to the inference workers. */
  inputSize: number;
  /** Where API-added sources may point (MASKWATCH_SOURCE_ALLOW, MASKWATCH_SOURCE_FILE_ROOT). */
  sourcePolicy: { allow: string[]; fileRoot: string };
  /** Browser sources one user or key may add (MASKWATCH_BROWSER_SOURCES). */
  browserSourcesPerOwner: number;
  /** MASKWATCH_SOURCE: the default source the old app's endpoints drive. */
  source: string | undefined;
  /** MASKWATCH_SOURCE_LOOP: play a default video file in a loop. */
  sourceLoop: boolean;
  /** Live monitoring (MASKWATCH_STREAM_*, MASKWATCH_SMOOTHING, …). */
  stream: {
    detector: string;
    fps: number;
    maxWidth: number;
    window: number;
    cooldownSeconds: number;
    snapshots: boolean;
    blur: boolean;
    /** MASKWATCH_BLUR_OTHERS: blur everyone but the violator in the stored frame. */
    blurOthers: boolean;
  };
  /** Webhooks and compliance rules (MASKWATCH_WEBHOOK_*, MASKWATCH_ALERT_INTERVAL_MS, MASKWATCH_DAILY_SUMMARY_HOUR). */
  alerts: AlertSettings;
  /** With REDIS_URL: how long a source's lease lasts unrenewed (a dead replica's sources move after it). */
  leaseMs: number;
  /** With REDIS_URL: the URL other replicas reach this one at (MASKWATCH_ADVERTISE_URL). */
  advertiseUrl: string | undefined;
  /** Events and snapshots older than this many days are deleted (0: kept for ever). */
  retentionDays: number;
  /** Batch jobs: largest upload (zip or video) or packed folder; the only folder tree folder jobs may read. */
  jobs: { maxBytes: number; root: string | undefined };
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/**
 * Reads the configuration from `env` (by default process.env after loading `.env` from the
 * working directory, which never overrides variables already set). Every bad variable is named.
 */
export function loadConfig(env: NodeJS.ProcessEnv = readEnv()): Config {
  const problems: string[] = [];
  const detector = (name: string): string => {
    const id = env[name]?.trim() || DEFAULT_DETECTOR;
    if (!Object.hasOwn(DETECTORS, id))
      problems.push(`${name}=${id}: must be one of ${Object.keys(DETECTORS).join(", ")}`);
    return id;
  };
  const int = (name: string, dflt: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === "") return dflt;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name}=${raw}: must be a whole number from ${min} to ${max}`);
      return dflt;
    }
    return n;
  };
  const url = (name: string, schemes: string[]): string | undefined => {
    const raw = env[name];
    if (!raw) return undefined;
    try {
      const u = new URL(raw);
      if (!schemes.includes(u.protocol.replace(/:$/, ""))) throw new Error();
      return raw;
    } catch {
      problems.push(`${name}: must be a ${schemes.map((s) => `${s}://`).join(" or ")} URL`);
      return undefined;
    }
  };

  const logLevel = (env.LOG_LEVEL ?? "info").toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    problems.push(`LOG_LEVEL=${env.LOG_LEVEL}: must be one of ${LOG_LEVELS.join(", ")}`);
  }
  const authRaw = (env.MASKWATCH_AUTH ?? "on").toLowerCase();
  if (!["on", "off"].includes(authRaw))
    problems.push(`MASKWATCH_AUTH=${env.MASKWATCH_AUTH}: must be on or off`);
  const apiKey = env.MASKWATCH_API_KEY || env.APP_TOKEN || undefined;
  if (apiKey !== undefined && apiKey.length < 16) {
    problems.push(
      `${env.MASKWATCH_API_KEY ? "MASKWATCH_API_KEY" : "APP_TOKEN"}: must be at least 16 characters`,
    );
  }
  const adminPassword = env.MASKWATCH_ADMIN_PASSWORD || undefined;
  if (adminPassword !== undefined && adminPassword.length < 8)
    problems.push("MASKWATCH_ADMIN_PASSWORD: must be at least 8 characters");
  const adminUser = (env.MASKWATCH_ADMIN_USER || "admin").toLowerCase();
  if (!/^[a-z0-9._-]{1,64}$/.test(adminUser))
    problems.push(`MASKWATCH_ADMIN_USER=${env.MASKWATCH_ADMIN_USER}: letters, digits, '.', '_' or '-'`);
  const secureCookies = (env.MASKWATCH_SECURE_COOKIES || "auto").toLowerCase();
  if (!["auto", "on", "off"].includes(secureCookies))
    problems.push(`MASKWATCH_SECURE_COOKIES=${env.MASKWATCH_SECURE_COOKIES}: must be auto, on or off`);
  const proxyRaw = (env.MASKWATCH_TRUST_PROXY ?? "").trim();
  const trustProxy = ["", "off", "false", "0"].includes(proxyRaw.toLowerCase())
    ? false
    : ["on", "true", "1"].includes(proxyRaw.toLowerCase())
      ? true
      : proxyRaw
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean);
  const onOff = (name: string, dflt: boolean): boolean => {
    const raw = (env[name] ?? "").toLowerCase();
    if (raw === "") return dflt;
    if (["on", "true", "1", "yes"].includes(raw)) return true;
    if (["off", "false", "0", "no"].includes(raw)) return false;
    problems.push(`${name}=${env[name]}: must be on or off`);
    return dflt;
  };
  const fps = Number(env.MASKWATCH_STREAM_FPS || 15);
  if (!(fps >= 0.1 && fps <= 60))
    problems.push(`MASKWATCH_STREAM_FPS=${env.MASKWATCH_STREAM_FPS}: must be a number from 0.1 to 60`);
  if (env.MASKWATCH_JOBS_ROOT && !isAbsolute(env.MASKWATCH_JOBS_ROOT))
    problems.push(`MASKWATCH_JOBS_ROOT=${env.MASKWATCH_JOBS_ROOT}: must be an absolute path`);
  const corsOrigins = (env.MASKWATCH_CORS_ORIGINS ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const origin of corsOrigins) {
    if (origin !== "*" && !/^https?:\/\/[^/]+$/.test(origin)) {
      problems.push(`MASKWATCH_CORS_ORIGINS: "${origin}" is not an origin like https://example.com`);
    }
  }

  const mqttUrl = url("MASKWATCH_MQTT_URL", ["mqtt", "mqtts", "ws", "wss"]);
  const mqttPrefix = env.MASKWATCH_MQTT_TOPIC_PREFIX || "maskwatch";
  if (
    /[+#]/.test(mqttPrefix) ||
    mqttPrefix.includes("\0") ||
    mqttPrefix.startsWith("/") ||
    mqttPrefix.endsWith("/")
  )
    problems.push(
      `MASKWATCH_MQTT_TOPIC_PREFIX=${mqttPrefix}: must be topic levels without +, # or a leading/trailing /`,
    );
  const dataDir = resolve(env.MASKWATCH_DATA_DIR || "data");
  const config: Config = {
    port: int("PORT", 8080, 0, 65535),
    host: env.HOST || "0.0.0.0",
    dataDir,
    databaseUrl: url("DATABASE_URL", ["postgres", "postgresql"]),
    redisUrl: url("REDIS_URL", ["redis", "rediss"]),
    apiKey,
    auth: authRaw !== "off",
    admin: { username: adminUser, password: adminPassword },
    session: {
      ttlHours: int("MASKWATCH_SESSION_HOURS", 168, 1, 24 * 365),
      secureCookies: secureCookies as Config["session"]["secureCookies"],
      loginAttempts: int("MASKWATCH_LOGIN_RATE_LIMIT", 10, 1, 1_000_000),
    },
    authFailureLimit: int("MASKWATCH_AUTH_FAILURE_LIMIT", 20, 1, 1_000_000),
    metricsAuth: onOff("MASKWATCH_METRICS_AUTH", false),
    requestTimeoutMs: int("MASKWATCH_REQUEST_TIMEOUT_MS", 15_000, 100, 3_600_000),
    trustProxy,
    webDir: resolve(env.MASKWATCH_WEB_DIR || fileURLToPath(new URL("../../web/dist", import.meta.url))),
    logLevel: logLevel as Config["logLevel"],
    logFile: env.MASKWATCH_LOG_FILE || undefined,
    corsOrigins,
    rateLimitPerKey: int("MASKWATCH_RATE_LIMIT", 600, 1, 1_000_000),
    rateLimitPerIp: int("MASKWATCH_RATE_LIMIT_IP", 1200, 1, 1_000_000),
    maxUploadBytes: int("MASKWATCH_MAX_UPLOAD_BYTES", 10 * 1024 * 1024, 1024, 512 * 1024 * 1024),
    maxPixels: int("MASKWATCH_MAX_PIXELS", 40_000_000, 1, 1_000_000_000),
    workers: int("MASKWATCH_WORKERS", 0, 0, 64),
    threadsPerWorker: int("MASKWATCH_THREADS", 1, 1, 64),
    maxQueue: int("MASKWATCH_QUEUE", 64, 1, 100_000),
    detector: detector("MASKWATCH_DETECTOR"),
    compatDetector: detector("MASKWATCH_COMPAT_DETECTOR"),
    inputSize: int("MASKWATCH_INPUT_SIZE", DEFAULT_INPUT_SIZE, INPUT_SIZE_RANGE[0], INPUT_SIZE_RANGE[1]),
    source: env.MASKWATCH_SOURCE || undefined,
    sourceLoop: onOff("MASKWATCH_SOURCE_LOOP", false),
    sourcePolicy: {
      allow: parseAllowList(env.MASKWATCH_SOURCE_ALLOW),
      fileRoot: resolve(env.MASKWATCH_SOURCE_FILE_ROOT || join(dataDir, "media")),
    },
    browserSourcesPerOwner: int("MASKWATCH_BROWSER_SOURCES", 4, 1, 10_000),
    stream: {
      detector: detector("MASKWATCH_STREAM_DETECTOR"),
      fps,
      maxWidth: int("MASKWATCH_STREAM_WIDTH", 640, 32, 3840),
      window: int("MASKWATCH_SMOOTHING", 10, 1, 100),
      cooldownSeconds: int("MASKWATCH_COOLDOWN", 60, 0, 86_400),
      snapshots: onOff("MASKWATCH_SNAPSHOTS", true),
      blur: onOff("MASKWATCH_BLUR_SNAPSHOTS", false),
      blurOthers: onOff("MASKWATCH_BLUR_OTHERS", false),
    },
    retentionDays: int("MASKWATCH_RETENTION_DAYS", 0, 0, 36_500),
    jobs: {
      maxBytes: int("MASKWATCH_JOB_MAX_BYTES", 200 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
      root: env.MASKWATCH_JOBS_ROOT ? resolve(env.MASKWATCH_JOBS_ROOT) : undefined,
    },
    alerts: {
      retryBaseMs: int("MASKWATCH_WEBHOOK_RETRY_MS", 10_000, 10, 3_600_000),
      attempts: int("MASKWATCH_WEBHOOK_ATTEMPTS", 6, 1, 20),
      allow: parseAllowList(env.MASKWATCH_WEBHOOK_ALLOW),
      timeoutMs: int("MASKWATCH_WEBHOOK_TIMEOUT_MS", 10_000, 100, 120_000),
      pollMs: 1_000,
      ruleIntervalMs: int("MASKWATCH_ALERT_INTERVAL_MS", 30_000, 100, 3_600_000),
      dailySummaryHour: env.MASKWATCH_DAILY_SUMMARY_HOUR
        ? int("MASKWATCH_DAILY_SUMMARY_HOUR", 0, 0, 23)
        : null,
      mqtt: mqttUrl ? { url: mqttUrl, prefix: mqttPrefix } : null,
    },
    leaseMs: int("MASKWATCH_LEASE_MS", 5000, 1000, 600_000),
    advertiseUrl: url("MASKWATCH_ADVERTISE_URL", ["http", "https"]),
  };
  if (problems.length) throw new ConfigError(problems);
  return config;
}

function readEnv(): NodeJS.ProcessEnv {
  if (existsSync(".env")) loadDotenv({ path: ".env", quiet: true });
  return process.env;
}

/** The effective configuration with secrets hidden, for `maskwatch config` and the start log. */
export function describeConfig(config: Config): Record<string, unknown> {
  return {
    ...config,
    apiKey: config.apiKey ? `${config.apiKey.slice(0, 3)}… (set)` : undefined,
    admin: { username: config.admin.username, password: config.admin.password ? "(set)" : undefined },
    databaseUrl: config.databaseUrl ? hidePassword(config.databaseUrl) : undefined,
    redisUrl: config.redisUrl ? hidePassword(config.redisUrl) : undefined,
    alerts: {
      ...config.alerts,
      mqtt: config.alerts.mqtt && { ...config.alerts.mqtt, url: hidePassword(config.alerts.mqtt.url) },
    },
  };
}

function hidePassword(raw: string): string {
  const u = new URL(raw);
  if (u.password) u.password = "***";
  return u.toString();
}
