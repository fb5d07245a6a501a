/**
 * PostgreSQL for the store tests: MASKWATCH_TEST_DATABASE_URL names a server (and a database to connect to
 * for administration, e.g. postgres://postgres@127.0.0.1:55432/postgres). Each call of createTestDatabase
 * makes a fresh, randomly named database there; drop() removes it, so runs never collide.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";

export const PG_TEST_ENV = "MASKWATCH_TEST_DATABASE_URL";

/** The admin URL, or undefined when PostgreSQL tests should be skipped. */
export function pgTestUrl(): string | undefined {
  const url = process.env[PG_TEST_ENV]?.trim();
  return url ? url : undefined;
}

export const PG_SKIP_MESSAGE = `${PG_TEST_ENV} is not set; set it to a postgres:// URL to run the PostgreSQL half`;

export interface PgTestDatabase {
  /** Connection URL of the fresh database. */
  url: string;
  name: string;
  /** Drop the database (terminating leftover connections). Idempotent. */
  drop(): Promise<void>;
}

async function withAdmin<T>(adminUrl: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export async function createTestDatabase(adminUrl: string): Promise<PgTestDatabase> {
  const name = `maskwatch_test_${process.pid}_${randomBytes(4).toString("hex")}`;
  await withAdmin(adminUrl, (c) => c.query(`CREATE DATABASE ${name}`));
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  let dropped = false;
  return {
    url: u.toString(),
    name,
    async drop() {
      if (dropped) return;
      dropped = true;
      await withAdmin(adminUrl, async (c) => {
        try {
          await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`); // PostgreSQL 13+
        } catch {
          await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name]);
          await c.query(`DROP DATABASE IF EXISTS ${name}`);
        }
      });
    },
  };
}

export interface PgTestSchema {
  /** URL whose connections use the fresh schema (search_path) of the database at `dbUrl`. */
  url: string;
  name: string;
  drop(): Promise<void>;
}

/**
 * A fresh, randomly named schema in the database at `dbUrl` (much cheaper than a database per test);
 * connections made with the returned URL see only it (search_path, via the libpq `options` parameter).
 */
export async function createTestSchema(dbUrl: string): Promise<PgTestSchema> {
  const name = `s_${randomBytes(6).toString("hex")}`;
  await withAdmin(dbUrl, (c) => c.query(`CREATE SCHEMA ${name}`));
  const u = new URL(dbUrl);
  u.searchParams.set("options", `-c search_path=${name}`);
  let dropped = false;
  return {
    url: u.toString(),
    name,
    async drop() {
      if (dropped) return;
      dropped = true;
      await withAdmin(dbUrl, (c) => c.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`));
    },
  };
}
