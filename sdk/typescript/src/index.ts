/**
 * @capydb/sdk — a thin client over CapyDB's HTTP API.
 *
 * Every request and response shape comes from `./schema.ts`, generated from
 * CapyDB's `openapi.json` by openapi-typescript; requests go through
 * openapi-fetch. This file adds what the document cannot say: credentials,
 * errors as exceptions, `429` retries, an `Idempotency-Key` on every POST,
 * pagination over `Link` headers, and waiting for jobs. It uses `fetch`
 * only: Node 18+, Deno, Bun and browsers.
 */
import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type { components, paths } from "./schema.js";

type Schemas = components["schemas"];
export type Job = Schemas["Job"];
export type Project = Schemas["Project"];
export type Preview = Schemas["Preview"];
export type Backup = Schemas["Backup"];
export type ConnectionInfo = Schemas["ConnectionInfo"];
export type Principal = Schemas["PrincipalView"];
export type CreateProject = Schemas["CreateProject"];
export type CreatePreview = Schemas["CreatePreview"];
export type CreateBackup = Schemas["CreateBackup"];

/** A request CapyDB answered with an error status. */
export class CapyDBError extends Error {
  /** The HTTP status, e.g. `403`. */
  readonly status: number;
  /** The request's `X-Request-Id`: quote it to support. */
  readonly requestId: string | null;
  /** The parsed error body, `{"error": "..."}` (RFC 8628's shape on the CLI login). */
  readonly body: unknown;

  constructor(status: number, message: string, requestId: string | null, body: unknown) {
    super(message);
    this.name = "CapyDBError";
    this.status = status;
    this.requestId = requestId;
    this.body = body;
  }
}

/** A job that ended `failed`: `message` is the job's `error`. */
export class JobFailedError extends CapyDBError {
  readonly job: Job;

  constructor(job: Job) {
    super(200, job.error ?? `job ${job.id} failed`, null, job);
    this.name = "JobFailedError";
    this.job = job;
  }
}

export interface CapyDBOptions {
  /** An API key (`capy_live_...`), a CLI token (`capy_cli_...`) or a Clerk session token. */
  token: string;
  /**
   * The API's base URL, e.g. `http://127.0.0.1:8787/api/capydb` or a
   * deployment's `https://<id>.execute-api.<region>.amazonaws.com`.
   * Default: the `CAPYDB_BASE` environment variable, where there is one.
   */
  baseUrl?: string;
  /** Another `fetch` (tests, proxies). */
  fetch?: typeof fetch;
  /** How many times a `429` is retried after its `Retry-After` (default 3). */
  maxRetries?: number;
  /** The longest `Retry-After` waited for, in ms (default 60 000); longer ones throw. */
  maxRetryDelayMs?: number;
}

export interface WaitOptions {
  /** Give up after this many ms (default 10 minutes). */
  timeout?: number;
  /** Stops waiting; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called with the job after every poll. */
  onProgress?: (job: Job) => void;
}

export interface CallOptions {
  /** The `Idempotency-Key` of a POST; by default a fresh UUID per call, kept across its own retries. */
  idempotencyKey?: string;
}

const IDEMPOTENCY_KEY = "Idempotency-Key";

function environmentBase(): string | undefined {
  // `process` exists on Node (and Deno's Node compatibility), not in browsers.
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return env?.CAPYDB_BASE;
}

function uuid(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c?.getRandomValues) c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

async function errorOf(response: Response): Promise<CapyDBError> {
  const text = await response.text().catch(() => "");
  let body: unknown = text;
  let message = `HTTP ${response.status}`;
  try {
    body = JSON.parse(text);
    const e = (body as { error?: unknown; error_description?: unknown }).error;
    if (typeof e === "string") message = e;
  } catch {
    if (text) message = `HTTP ${response.status}: ${text.slice(0, 200)}`;
  }
  return new CapyDBError(response.status, message, response.headers.get("x-request-id"), body);
}

/** The `rel="next"` target of a `Link` header, if any. */
export function nextLink(link: string | null): string | null {
  if (!link) return null;
  for (const part of link.split(",")) {
    const m = /<([^>]*)>\s*;\s*rel="?next"?/.exec(part);
    if (m) return m[1]!;
  }
  return null;
}

type Result<T> = { data?: T; error?: unknown; response: Response };

/** The client. `raw` is the typed openapi-fetch client for anything the helpers do not cover. */
export class CapyDB {
  readonly raw: Client<paths>;
  readonly baseUrl: string;
  private readonly fetcher: typeof fetch;

  constructor(options: CapyDBOptions) {
    const baseUrl = (options.baseUrl ?? environmentBase())?.replace(/\/+$/, "");
    if (!baseUrl) throw new Error("CapyDB: no base URL: pass `baseUrl` or set CAPYDB_BASE");
    if (!options.token) throw new Error("CapyDB: no token: pass an API key, a CLI token or a session token");
    this.baseUrl = baseUrl;
    const inner = options.fetch ?? globalThis.fetch.bind(globalThis);
    const maxRetries = options.maxRetries ?? 3;
    const maxDelay = options.maxRetryDelayMs ?? 60_000;
    const token = options.token;
    // Credentials, the Idempotency-Key of a POST and `429` retries, for
    // every request of this client (openapi-fetch's and the helpers').
    this.fetcher = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
      const request = new Request(input, init);
      request.headers.set("Authorization", `Bearer ${token}`);
      if (request.method === "POST" && !request.headers.has(IDEMPOTENCY_KEY)) {
        request.headers.set(IDEMPOTENCY_KEY, uuid());
      }
      for (let attempt = 0; ; attempt++) {
        const response = await inner(request.clone());
        if (response.status !== 429 || attempt >= maxRetries) return response;
        const seconds = Number(response.headers.get("retry-after") ?? "1");
        const delay = Math.max(0, Number.isFinite(seconds) ? seconds : 1) * 1000;
        if (delay > maxDelay) return response;
        await response.body?.cancel();
        await sleep(delay, request.signal);
      }
    };
    this.raw = createClient<paths>({ baseUrl, fetch: this.fetcher });
  }

  /** The data of a result, or its error thrown as a `CapyDBError`. */
  private async unwrap<T>(result: Result<T>): Promise<T> {
    if (result.response.ok && result.data !== undefined) return result.data;
    if (result.response.ok) return undefined as T;
    const requestId = result.response.headers.get("x-request-id");
    const e = result.error as { error?: unknown } | undefined;
    const message = typeof e?.error === "string" ? e.error : `HTTP ${result.response.status}`;
    throw new CapyDBError(result.response.status, message, requestId, result.error);
  }

  private post(options?: CallOptions): { headers?: Record<string, string> } {
    return options?.idempotencyKey ? { headers: { [IDEMPOTENCY_KEY]: options.idempotencyKey } } : {};
  }

  /**
   * Every item of a list endpoint, page after page (`Link: <...>; rel="next"`).
   * `path` is the list's path, e.g. `/v1/projects`.
   */
  async *paginate<T>(path: string, pageSize = 100): AsyncGenerator<T> {
    let url: string | null = `${this.baseUrl}${path}${path.includes("?") ? "&" : "?"}limit=${pageSize}`;
    while (url) {
      const response = await this.fetcher(url);
      if (!response.ok) throw await errorOf(response);
      for (const item of (await response.json()) as T[]) yield item;
      const next = nextLink(response.headers.get("link"));
      url = next === null ? null : new URL(next, `${this.baseUrl}/`).toString();
    }
  }

  /** Who the credential is. */
  async me(): Promise<Principal> {
    return (await this.unwrap(await this.raw.GET("/v1/me"))).principal;
  }

  /**
   * Polls a job until it ends: resolves with the `completed` job, rejects
   * with a `JobFailedError` (the job's `error`) when it `failed`. Polls
   * quickly at first, then every few seconds.
   */
  async waitForJob(jobId: string, options: WaitOptions = {}): Promise<Job> {
    const deadline = Date.now() + (options.timeout ?? 600_000);
    let delay = 250;
    for (;;) {
      options.signal?.throwIfAborted();
      const { job } = await this.unwrap(
        await this.raw.GET("/v1/jobs/{job_id}", { params: { path: { job_id: jobId } }, signal: options.signal }),
      );
      options.onProgress?.(job);
      if (job.state === "completed") return job;
      if (job.state === "failed") throw new JobFailedError(job);
      if (Date.now() + delay > deadline) {
        throw new Error(`CapyDB: job ${jobId} is still ${job.state} after ${options.timeout ?? 600_000} ms`);
      }
      await sleep(delay, options.signal);
      delay = Math.min(Math.round(delay * 1.6), 5_000);
    }
  }

  readonly projects = {
    list: (): AsyncGenerator<Project> => this.paginate<Project>("/v1/projects"),
    get: async (id: string): Promise<Project> =>
      (await this.unwrap(await this.raw.GET("/v1/projects/{project_id}", { params: { path: { project_id: id } } })))
        .project,
    /** Starts provisioning; `wait()` resolves once the database accepts connections. */
    create: async (body: CreateProject, options?: CallOptions) => {
      const started = await this.unwrap(await this.raw.POST("/v1/projects", { body, ...this.post(options) }));
      return { ...started, wait: (o?: WaitOptions) => this.waitForJob(started.job.id, o) };
    },
    connections: async (id: string): Promise<ConnectionInfo[]> =>
      this.unwrap(
        await this.raw.GET("/v1/projects/{project_id}/connections", { params: { path: { project_id: id } } }),
      ),
    delete: async (id: string) =>
      this.unwrap(await this.raw.DELETE("/v1/projects/{project_id}", { params: { path: { project_id: id } } })),
  };

  readonly previews = {
    list: (projectId: string): AsyncGenerator<Preview> =>
      this.paginate<Preview>(`/v1/projects/${encodeURIComponent(projectId)}/preview-databases`),
    get: async (id: string): Promise<Preview> =>
      (
        await this.unwrap(
          await this.raw.GET("/v1/preview-databases/{preview_id}", { params: { path: { preview_id: id } } }),
        )
      ).preview,
    /**
     * Starts a preview database of a project; `wait()` resolves, once it is
     * ready, with the preview and its connection details.
     */
    create: async (projectId: string, body: CreatePreview, options?: CallOptions) => {
      const started = await this.unwrap(
        await this.raw.POST("/v1/projects/{project_id}/preview-databases", {
          params: { path: { project_id: projectId } },
          body,
          ...this.post(options),
        }),
      );
      return {
        ...started,
        wait: async (o?: WaitOptions) => {
          await this.waitForJob(started.job.id, o);
          const id = started.preview.id;
          return { preview: await this.previews.get(id), connections: await this.previews.connections(id) };
        },
      };
    },
    connections: async (id: string): Promise<ConnectionInfo[]> =>
      this.unwrap(
        await this.raw.GET("/v1/preview-databases/{preview_id}/connections", { params: { path: { preview_id: id } } }),
      ),
    delete: async (id: string) =>
      this.unwrap(await this.raw.DELETE("/v1/preview-databases/{preview_id}", { params: { path: { preview_id: id } } })),
  };

  readonly backups = {
    list: (projectId: string): AsyncGenerator<Backup> =>
      this.paginate<Backup>(`/v1/projects/${encodeURIComponent(projectId)}/backups`),
    create: async (projectId: string, body: CreateBackup = {}, options?: CallOptions) => {
      const started = await this.unwrap(
        await this.raw.POST("/v1/projects/{project_id}/backups", {
          params: { path: { project_id: projectId } },
          body,
          ...this.post(options),
        }),
      );
      return { ...started, wait: (o?: WaitOptions) => this.waitForJob(started.job.id, o) };
    },
  };

  readonly jobs = {
    get: async (id: string): Promise<Job> =>
      (await this.unwrap(await this.raw.GET("/v1/jobs/{job_id}", { params: { path: { job_id: id } } }))).job,
  };
}
