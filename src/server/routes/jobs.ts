import type { FastifyInstance, FastifyRequest } from "fastify";
import { checkZip, packFolder, uploadKind, videoContainer } from "../../jobs/inputs.ts";
import { DEFAULT_VIDEO_FPS, DEFAULT_VIDEO_WIDTH, MAX_VIDEO_FPS } from "../../jobs/process.ts";
import { JobQueueError } from "../../jobs/service.ts";
import {
  getJob,
  JOB_STATES,
  type JobKind,
  type JobRecord,
  type JobState,
  listJobResults,
  listJobs,
} from "../../store/jobs.ts";
import {
  analyzeOptions,
  checkParams,
  DETECT_PARAM_PROPERTIES,
  type DetectParams,
} from "../../vision/options.ts";
import { requireScope } from "../auth.ts";
import type { ServerContext } from "../context.ts";
import { HttpError } from "../errors.ts";
import { documentedBody, JOB_INPUT } from "../openapi.ts";

/** The options of a job: those of /api/v1/detect (but annotate), and for videos the sampling. */
const { annotate: _annotate, ...detectProperties } = DETECT_PARAM_PROPERTIES;
const jobParamProperties = {
  ...detectProperties,
  fps: {
    type: "number",
    minimum: 0.01,
    maximum: MAX_VIDEO_FPS,
    description: `video jobs: frames analysed per second of video (default ${DEFAULT_VIDEO_FPS})`,
  },
  max_width: {
    type: "integer",
    minimum: 32,
    maximum: 3840,
    description: `video jobs: frames wider than this are scaled down first (default ${DEFAULT_VIDEO_WIDTH})`,
  },
} as const;

type JobParams = Omit<DetectParams, "annotate"> & { fps?: number; max_width?: number };

const errorSchema = {
  type: "object",
  properties: { status: { type: "string" }, code: { type: "string" }, message: { type: "string" } },
} as const;

const jobSchema = {
  type: "object",
  properties: {
    id: { type: "string" },
    kind: { type: "string", enum: ["images", "video"] },
    state: { type: "string", enum: [...JOB_STATES] },
    input: { type: "object", properties: { name: { type: ["string", "null"] }, bytes: { type: "integer" } } },
    options: { type: "object", additionalProperties: true },
    progress: {
      type: "object",
      properties: { done: { type: "integer" }, total: { type: ["integer", "null"] } },
    },
    faces: { type: "integer", description: "faces found so far" },
    failed_items: { type: "integer", description: "images or frames that could not be analysed" },
    error: { type: ["string", "null"], description: "why the job failed" },
    attempts: { type: "integer" },
    created_at: { type: "string" },
    started_at: { type: ["string", "null"] },
    finished_at: { type: ["string", "null"] },
    duration_ms: { type: ["integer", "null"] },
    links: { type: "object", properties: { self: { type: "string" }, results: { type: "string" } } },
  },
} as const;

const idParams = { type: "object", properties: { id: { type: "string", maxLength: 64 } } } as const;

/**
 * Batch jobs: a zip of images, a video, or (admins) a server folder, analysed in the background by whichever
 * replica takes it from the queue; progress and results are read from the database, so from any replica.
 */
export async function jobRoutes(app: FastifyInstance, ctx: ServerContext): Promise<void> {
  const { db, jobs } = ctx;
  const limits = jobs.limits;

  /** Admins (and everyone with auth off) see every job; other callers the jobs they made. */
  const visible = (request: FastifyRequest, job: JobRecord | undefined): job is JobRecord =>
    !!job && (seesAll(request) || job.createdBy === (request.apiKey?.id ?? null));
  const seesAll = (request: FastifyRequest) => !ctx.config.auth || !!request.apiKey?.scopes.includes("admin");
  const mustGet = async (request: FastifyRequest, id: string): Promise<JobRecord> => {
    const job = await getJob(db, id);
    if (!visible(request, job)) throw new HttpError(404, "job_not_found", `no job ${id}`);
    return job;
  };

  /** Checks the options now (a bad one is the caller's 400, not a failed job later); detector resolved. */
  const jobOptions = (kind: JobKind, p: JobParams): Record<string, unknown> => {
    const { fps, max_width, ...detect } = p;
    if (kind !== "video" && (fps !== undefined || max_width !== undefined))
      throw new HttpError(400, "invalid_parameters", "fps and max_width apply to video jobs only");
    const resolved = analyzeOptions(detect, ctx.config.detector);
    const options: Record<string, unknown> = { ...detect, detector: resolved.detector };
    if (kind === "video") {
      options.fps = fps ?? DEFAULT_VIDEO_FPS;
      options.max_width = max_width ?? DEFAULT_VIDEO_WIDTH;
    }
    return options;
  };

  app.post<{ Querystring: JobParams }>(
    "/api/v1/jobs",
    {
      config: documentedBody(JOB_INPUT),
      schema: {
        summary: "Start a batch job: a zip of images, a video, or a server folder",
        description:
          'multipart/form-data with one file part `file` (a .zip of images, or a video) and the options in the query string; or JSON `{"folder": "/abs/path", …options}` (admin; under MASKWATCH_JOBS_ROOT when set). Answers 202 with the job; follow `links`.',
        tags: ["jobs"],
        querystring: { type: "object", properties: jobParamProperties, additionalProperties: false },
        response: { 202: jobSchema, "4xx": errorSchema, "5xx": errorSchema },
      },
    },
    async (request, reply) => {
      requireScope(request, "detect", ctx.config.auth);
      const type = request.headers["content-type"] ?? "";
      let kind: JobKind;
      let bytes: Uint8Array;
      let name: string | undefined;
      let params: JobParams;
      if (type.startsWith("multipart/form-data")) {
        params = request.query;
        const part = await request.file({ limits: { fileSize: limits.maxBytes, files: 1 } });
        if (!part)
          throw new HttpError(400, "missing_file", 'send the zip or video in a multipart field named "file"');
        if (part.fieldname !== "file") {
          part.file.resume();
          throw new HttpError(
            400,
            "wrong_field",
            `the file must be in the field "file", not "${part.fieldname}"`,
          );
        }
        try {
          bytes = await part.toBuffer();
        } catch (err) {
          if ((err as { code?: string }).code === "FST_REQ_FILE_TOO_LARGE")
            throw new HttpError(
              413,
              "input_too_large",
              `the file is larger than ${limits.maxBytes} bytes (MASKWATCH_JOB_MAX_BYTES)`,
            );
          throw err;
        }
        if (!bytes.length) throw new HttpError(400, "empty_file", "the file is empty");
        name = part.filename || undefined;
        kind = uploadKind(name, part.mimetype, bytes);
        if (kind === "images") checkZip(bytes, limits);
        else videoContainer(bytes);
      } else if (type.startsWith("application/json")) {
        const { folder, ...rest } = (request.body ?? {}) as Record<string, unknown>;
        if (typeof folder !== "string")
          throw new HttpError(400, "missing_folder", 'JSON jobs name a server folder in "folder"');
        requireScope(request, "admin", ctx.config.auth);
        if (Object.keys(request.query).length)
          throw new HttpError(400, "invalid_parameters", "JSON jobs carry their options in the body");
        params = checkParams<JobParams>(rest, jobParamProperties);
        jobOptions("images", params);
        const packed = await packFolder(folder, ctx.config.jobs.root, limits);
        kind = "images";
        bytes = packed.zip;
        name = folder;
      } else {
        throw new HttpError(
          415,
          "unsupported_media_type",
          `send multipart/form-data (a zip or a video in "file") or application/json ({"folder": …}); got ${type || "no content type"}`,
        );
      }
      const options = jobOptions(kind, params);
      const job = await jobs
        .submit({ kind, bytes, name, options, createdBy: request.apiKey?.id ?? null })
        .catch((err) => {
          if (err instanceof JobQueueError)
            throw new HttpError(503, err.code, err.message, { "retry-after": "5" });
          throw err;
        });
      request.log.info({ job: job.id, kind, bytes: bytes.length, queue: jobs.queue.kind }, "job queued");
      reply.status(202).header("location", `/api/v1/jobs/${job.id}`);
      return present(job);
    },
  );

  app.get<{ Querystring: { limit: number; cursor?: string; state?: JobState } }>(
    "/api/v1/jobs",
    {
      schema: {
        summary: "Jobs, newest first, with cursor pagination",
        description: "Admins see every job; other callers the jobs they started.",
        tags: ["jobs"],
        querystring: {
          type: "object",
          properties: {
            limit: { type: "integer", minimum: 1, maximum: 500, default: 50 },
            cursor: { type: "string", maxLength: 200 },
            state: { type: "string", enum: [...JOB_STATES] },
          },
          additionalProperties: false,
        },
      },
    },
    async (request) => {
      requireScope(request, "detect", ctx.config.auth);
      const q = request.query;
      const page = await listJobs(db, {
        limit: q.limit,
        cursor: q.cursor,
        state: q.state,
        createdBy: seesAll(request) ? undefined : (request.apiKey?.id ?? ""),
      });
      return { jobs: page.jobs.map(present), next_cursor: page.nextCursor };
    },
  );

  app.get<{ Params: { id: string } }>(
    "/api/v1/jobs/:id",
    {
      schema: {
        summary: "One job: state, progress, error, timings",
        tags: ["jobs"],
        params: idParams,
        response: { 200: jobSchema, "4xx": errorSchema },
      },
    },
    async (request) => {
      requireScope(request, "detect", ctx.config.auth);
      return present(await mustGet(request, request.params.id));
    },
  );

  app.get<{ Params: { id: string }; Querystring: { limit: number; cursor?: number } }>(
    "/api/v1/jobs/:id/results",
    {
      schema: {
        summary:
          "A finished job's results: one per image (by name) or frame (by time), faces or an error each",
        description: "409 while the job is queued or running. A failed job answers with the results it had.",
        tags: ["jobs"],
        params: idParams,
        querystring: {
          type: "object",
          properties: {
            limit: { type: "integer", minimum: 1, maximum: 10_000, default: 1000 },
            cursor: { type: "integer", minimum: -1, description: "next_cursor of the previous page" },
          },
          additionalProperties: false,
        },
      },
    },
    async (request) => {
      requireScope(request, "detect", ctx.config.auth);
      const job = await mustGet(request, request.params.id);
      if (job.state === "queued" || job.state === "active")
        throw new HttpError(
          409,
          "job_not_finished",
          `job ${job.id} is ${job.state} (${job.progressDone}/${job.progressTotal ?? "?"}); results come when it ends`,
        );
      const page = await listJobResults(db, job.id, {
        after: request.query.cursor,
        limit: request.query.limit,
      });
      return {
        id: job.id,
        kind: job.kind,
        state: job.state,
        results: page.results.map((r) => ({ index: r.index, ...r.body })),
        next_cursor: page.nextCursor,
      };
    },
  );

  app.delete<{ Params: { id: string } }>(
    "/api/v1/jobs/:id",
    {
      schema: {
        summary: "Delete a job with its results (cancelling it when queued or running)",
        tags: ["jobs"],
        params: idParams,
      },
    },
    async (request) => {
      requireScope(request, "detect", ctx.config.auth);
      const job = await mustGet(request, request.params.id);
      const state = await jobs.cancel(job.id);
      if (!state) throw new HttpError(404, "job_not_found", `no job ${job.id}`);
      return { id: job.id, deleted: true, cancelled: state === "queued" || state === "active", state };
    },
  );
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function present(job: JobRecord) {
  return {
    id: job.id,
    kind: job.kind,
    state: job.state,
    input: { name: job.inputName, bytes: job.inputSize },
    options: job.options,
    progress: { done: job.progressDone, total: job.progressTotal },
    faces: job.faces,
    failed_items: job.errors,
    error: job.error,
    attempts: job.attempts,
    created_at: new Date(job.createdAt).toISOString(),
    started_at: iso(job.startedAt),
    finished_at: iso(job.finishedAt),
    duration_ms: job.startedAt !== null && job.finishedAt !== null ? job.finishedAt - job.startedAt : null,
    links: { self: `/api/v1/jobs/${job.id}`, results: `/api/v1/jobs/${job.id}/results` },
  };
}
