/** The store: the only code that touches the database. */
export * from "./alerts.ts";
export * from "./api-keys.ts";
export * from "./db.ts";
export * from "./events.ts";
export * from "./jobs.ts";
export * from "./migrations.ts";
export * from "./reports.ts";
export * from "./retention.ts";
export * from "./sessions.ts";
export * from "./settings.ts";
export * from "./sources.ts";
export * from "./users.ts";
export * from "./zones.ts";
