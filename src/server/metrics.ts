import type { FastifyInstance } from "fastify";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { MonitorBus, SourceStatus } from "../streams/monitor.ts";
import type { Face } from "../vision/types.ts";

/** The Prometheus registry of one server instance. */
export class Metrics {
  readonly registry = new Registry();
  readonly http = new Histogram({
    name: "http_request_duration_seconds",
    help: "HTTP request latency",
    labelNames: ["method", "route", "status"],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly inference = new Histogram({
    name: "maskwatch_inference_seconds",
    help: "Detection (and classification) time per image, by detector",
    labelNames: ["detector"],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly faces = new Counter({
    name: "maskwatch_faces_total",
    help: "Faces found, by mask label (unclassified when no classification was asked)",
    labelNames: ["label"],
    registers: [this.registry],
  });
  readonly queue = new Gauge({
    name: "maskwatch_inference_queue",
    help: "Inference jobs waiting and running",
    labelNames: ["state"],
    registers: [this.registry],
  });

  readonly events = new Counter({
    name: "maskwatch_events_total",
    help: "Monitoring events committed, by source, kind (violation / observation) and label",
    labelNames: ["source", "kind", "label"],
    registers: [this.registry],
  });
  readonly frames = new Counter({
    name: "maskwatch_frames_total",
    help: "Frames analysed, by source",
    labelNames: ["source"],
    registers: [this.registry],
  });
  readonly sourceFps = new Gauge({
    name: "maskwatch_source_fps",
    help: "Frames analysed per second, by source (recent average)",
    labelNames: ["source"],
    registers: [this.registry],
  });
  readonly eventLatency = new Histogram({
    name: "maskwatch_event_latency_seconds",
    help: "Frame arrival to event committed",
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** One analysed image: its detection (+ classification) time and its faces by label. */
  observeAnalysis(result: {
    detector: string;
    faces: readonly Face[];
    timings: { preprocess: number; inference: number; postprocess: number; classify?: number };
  }): void {
    const t = result.timings;
    const ms = t.preprocess + t.inference + t.postprocess + (t.classify ?? 0);
    this.inference.observe({ detector: result.detector }, ms / 1000);
    for (const f of result.faces) this.faces.inc({ label: f.mask?.label ?? "unclassified" });
  }

  /** Counts what the source monitors announce. */
  /** Counts this replica's own work (`relayed` is true for another replica's messages). */
  observeStreams(bus: MonitorBus, relayed: () => boolean = () => false): void {
    bus.on("event", (e) => {
      if (relayed()) return;
      this.events.inc({ source: e.sourceId, kind: e.kind, label: e.label });
      this.eventLatency.observe(Math.max(0, Date.now() - e.at) / 1000);
    });
    bus.on("frame", (f) => {
      if (!relayed()) this.frames.inc({ source: f.sourceId });
    });
  }

  /** Times every request by its route pattern (not the raw URL: bounded label values). */
  register(
    app: FastifyInstance,
    poolStats: () => { busy: number; queued: number },
    sources: () => readonly SourceStatus[] = () => [],
  ): void {
    app.addHook("onResponse", async (request, reply) => {
      const route = request.routeOptions.url ?? "unmatched";
      this.http.observe(
        { method: request.method, route, status: reply.statusCode },
        reply.elapsedTime / 1000,
      );
    });
    app.get("/metrics", { schema: { hide: true } }, async (_request, reply) => {
      const s = poolStats();
      this.queue.set({ state: "running" }, s.busy);
      this.queue.set({ state: "waiting" }, s.queued);
      for (const src of sources())
        this.sourceFps.set({ source: src.id }, src.state === "running" ? src.fps : 0);
      reply.header("content-type", this.registry.contentType);
      return this.registry.metrics();
    });
  }
}
