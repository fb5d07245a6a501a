import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The console is served by the Maskwatch server from web/dist; `npm run dev:web` proxies the API to it.
const api = process.env.MASKWATCH_DEV_API ?? "http://127.0.0.1:8080";
const proxied = [
  "/api",
  "/detect",
  "/video_feed",
  "/get_stats",
  "/health",
  "/metrics",
  "/docs",
  "/openapi.json",
];

export default defineConfig({
  root: import.meta.dirname,
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true, chunkSizeWarningLimit: 1024 },
  server: {
    proxy: Object.fromEntries(proxied.map((p) => [p, { target: api, ws: true, changeOrigin: false }])),
  },
});
