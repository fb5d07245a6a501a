/** The store: the only code that touches the database. */
export * from "./api-keys.ts";
export * from "./db.ts";
export * from "./migrations.ts";
