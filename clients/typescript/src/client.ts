/** RunStateClient: IRunStateStore over the runstate HTTP API, plus the engine and followers. */

import {
  errorFromProblem,
  InvalidInputError,
  type Problem,
  RunNotFoundError,
  RunStateError,
  StoreUnavailableError,
} from "./errors.js";
import { type JsonValue, parseJson, stringifyJson } from "./json.js";
import { readSse } from "./sse.js";
import type {
  AppendResult,
  IRunStateStore,
  JsonObject,
  ListedRun,
  RunBootstrapInput,
  RunEventInput,
  RunEventPersisted,
  RunMetadata,
  RunState,
  RunStatus,
} from "./types.js";

/** How to reach the server. */
export interface ClientOptions {
  /** The server's base URL, e.g. http://127.0.0.1:8080. */
  baseUrl: string;
  /** A bearer token (read, write or admin scope), if the server has tokens. */
  token?: string;
  /** Per-request timeout in milliseconds (default 30000; streams have none). */
  timeoutMs?: number;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
}

/** Options of the engine commands. */
export interface CommandOptions {
  /** Makes a retried command a no-op: it becomes the id of the event written. */
  idempotencyKey?: string;
}

type Wire = { [key: string]: JsonValue };

const toTime = (value: string | Date | null | undefined): string | null | undefined =>
  value instanceof Date ? value.toISOString() : value;

function metadataToWire(metadata: RunMetadata): Wire {
  const wire: { [key: string]: JsonValue | undefined } = {
    run_id: metadata.runId,
    workflow: metadata.workflow,
    workflow_version: metadata.workflowVersion,
    tenant_id: metadata.tenantId,
    parent_run_id: metadata.parentRunId,
    input: metadata.input,
    labels: metadata.labels,
    created_at: toTime(metadata.createdAt),
    schema_version: metadata.schemaVersion,
  };
  return Object.fromEntries(Object.entries(wire).filter(([, v]) => v !== undefined)) as Wire;
}

function eventToWire(event: RunEventInput): Wire {
  return {
    type: event.type,
    payload: event.payload ?? {},
    // A client-made id keeps a retried request idempotent: the store skips ids it has.
    event_id: event.eventId ?? globalThis.crypto.randomUUID(),
    schema_version: event.schemaVersion ?? 1,
    occurred_at: toTime(event.occurredAt) ?? null,
  };
}

function metadataFromWire(wire: Wire): RunMetadata {
  return {
    runId: wire["run_id"] as string,
    workflow: wire["workflow"] as string,
    workflowVersion: wire["workflow_version"] as string | null,
    tenantId: wire["tenant_id"] as string | null,
    parentRunId: wire["parent_run_id"] as string | null,
    input: wire["input"] ?? null,
    labels: wire["labels"] as Record<string, string>,
    createdAt: wire["created_at"] as string,
    schemaVersion: wire["schema_version"] as number,
  };
}

/** Turn a stored event as the API sends it into the store interface's shape. */
export function eventFromWire(wire: Wire): RunEventPersisted {
  return {
    runId: wire["run_id"] as string,
    seq: Number(wire["seq"]),
    position: Number(wire["position"]),
    type: wire["type"] as string,
    payload: wire["payload"] as JsonObject,
    eventId: wire["event_id"] as string,
    schemaVersion: Number(wire["schema_version"]),
    occurredAt: wire["occurred_at"] as string | null,
    recordedAt: wire["recorded_at"] as string,
  };
}

function resultFromWire(wire: Wire): AppendResult {
  return {
    runId: wire["run_id"] as string,
    appended: (wire["appended"] as Wire[]).map(eventFromWire),
    deduplicated: wire["deduplicated"] as string[],
    lastSeq: Number(wire["last_seq"]),
  };
}

const segment = (runId: string): string => {
  if (typeof runId !== "string" || runId === "") {
    throw new InvalidInputError("must be a non-empty string", "runId");
  }
  // Dots too: no URL parser may resolve "." or ".." away.
  return encodeURIComponent(runId).replaceAll(".", "%2E");
};

/** A live follower: iterate it for events; `lastEventId` is where a new one would resume. */
export interface Follower extends AsyncIterable<RunEventPersisted> {
  readonly lastEventId: string | undefined;
}

/** The runstate HTTP API as an IRunStateStore, with the engine commands and SSE followers. */
export class RunStateClient implements IRunStateStore {
  readonly #baseUrl: string;
  readonly #headers: Record<string, string>;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;

  constructor(options: ClientOptions) {
    this.#baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#headers = { Accept: "application/json" };
    if (options.token !== undefined) this.#headers["Authorization"] = `Bearer ${options.token}`;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#fetch = options.fetch ?? globalThis.fetch;
  }

  /** Never show the token, not even through util.inspect or console.log. */
  toJSON(): { baseUrl: string } {
    return { baseUrl: this.#baseUrl };
  }

  async #call(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Wire | null> {
    let content: string | undefined;
    if (body !== undefined) {
      try {
        content = stringifyJson(body);
      } catch (error) {
        throw new InvalidInputError(`cannot be sent as JSON: ${(error as Error).message}`, "input");
      }
    }
    let response: Response;
    try {
      response = await this.#fetch(`${this.#baseUrl}${path}`, {
        method,
        headers: {
          ...this.#headers,
          ...(content === undefined ? {} : { "Content-Type": "application/json" }),
          ...headers,
        },
        ...(content === undefined ? {} : { body: content }),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (error) {
      const name = (error as Error).name;
      const timedOut = name === "TimeoutError" || name === "AbortError";
      throw new StoreUnavailableError(
        timedOut
          ? `${this.#baseUrl}: no answer in time (a write may have committed)`
          : `cannot reach ${this.#baseUrl}: ${name}`,
        true,
      );
    }
    const text = await response.text();
    if (response.ok) return text === "" ? null : (parseJson(text) as Wire);
    throw problemError(response.status, text);
  }

  // -- IRunStateStore -------------------------------------------------------------------------

  /** Atomically store a new run's metadata, its first events and their outbox records. */
  async bootstrapRunTx(input: RunBootstrapInput): Promise<AppendResult> {
    const body = {
      metadata: metadataToWire(input.metadata),
      first_events: input.firstEvents.map(eventToWire),
    };
    return resultFromWire((await this.#call("POST", "/v1/runs", body)) as Wire);
  }

  /** Atomically append events to an existing run; with `expectedSeq`, only at that seq. */
  async appendAndEnqueueTx(
    runId: string,
    events: RunEventInput[],
    expectedSeq?: number,
  ): Promise<AppendResult> {
    const body = { events: events.map(eventToWire), expected_seq: expectedSeq ?? null };
    const path = `/v1/runs/${segment(runId)}/events`;
    return resultFromWire((await this.#call("POST", path, body)) as Wire);
  }

  /** The run's events in seq order (after `afterSeq`, at most `limit`); [] for unknown runs. */
  async listEvents(
    runId: string,
    options: { afterSeq?: number; limit?: number } = {},
  ): Promise<RunEventPersisted[]> {
    const events: RunEventPersisted[] = [];
    let after = options.afterSeq ?? 0;
    for (;;) {
      const want = Math.min(1000, (options.limit ?? Infinity) - events.length);
      const path = `/v1/runs/${segment(runId)}/events?after_seq=${after}&limit=${want}`;
      let page: Wire[];
      try {
        page = ((await this.#call("GET", path)) as Wire)["events"] as Wire[];
      } catch (error) {
        if (error instanceof RunNotFoundError) return events;
        throw error;
      }
      events.push(...page.map(eventFromWire));
      if (page.length < want || want === 0) return events;
      after = events[events.length - 1]?.seq ?? after;
    }
  }

  /** The run's metadata, or null if the run does not exist. */
  async getRunMetadataByRunId(runId: string): Promise<RunMetadata | null> {
    try {
      const wire = await this.#call("GET", `/v1/runs/${segment(runId)}/metadata`);
      return metadataFromWire(wire as Wire);
    } catch (error) {
      if (error instanceof RunNotFoundError) return null;
      throw error;
    }
  }

  // -- reads around the store ---------------------------------------------------------------

  /** A run's metadata and projected state. */
  async getRun(runId: string): Promise<{ metadata: RunMetadata; state: RunState }> {
    const wire = (await this.#call("GET", `/v1/runs/${segment(runId)}`)) as Wire;
    return { metadata: metadataFromWire(wire["metadata"] as Wire), state: wire["state"] as RunState };
  }

  /** Runs newest first with their status; pass `cursor` from the previous page to go on. */
  async listRuns(
    filters: {
      status?: RunStatus[];
      workflow?: string;
      tenantId?: string;
      since?: string | Date;
      limit?: number;
      cursor?: string;
    } = {},
  ): Promise<{ runs: ListedRun[]; nextCursor: string | null }> {
    const query = new URLSearchParams();
    for (const status of filters.status ?? []) query.append("status", status);
    if (filters.workflow !== undefined) query.set("workflow", filters.workflow);
    if (filters.tenantId !== undefined) query.set("tenant_id", filters.tenantId);
    if (filters.since !== undefined) query.set("since", String(toTime(filters.since)));
    if (filters.limit !== undefined) query.set("limit", String(filters.limit));
    if (filters.cursor !== undefined) query.set("cursor", filters.cursor);
    const wire = (await this.#call("GET", `/v1/runs?${query}`)) as Wire;
    const runs = (wire["runs"] as Wire[]).map((run) => ({
      metadata: metadataFromWire(run["metadata"] as Wire),
      lastSeq: Number(run["last_seq"]),
      updatedAt: run["updated_at"] as string,
      status: run["status"] as RunStatus,
      attempt: Number(run["attempt"]),
    }));
    return { runs, nextCursor: (wire["next_cursor"] as string | null) ?? null };
  }

  // -- the engine ---------------------------------------------------------------------------

  async #command(
    runId: string,
    name: string,
    body: { [key: string]: unknown },
    options: CommandOptions,
  ): Promise<RunState> {
    const headers: Record<string, string> =
      options.idempotencyKey === undefined ? {} : { "Idempotency-Key": options.idempotencyKey };
    const compact = Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
    const wire = await this.#call("POST", `/v1/runs/${segment(runId)}/${name}`, compact, headers);
    return wire as unknown as RunState;
  }

  /** Create a run through the engine: QUEUED, or QUEUED then RUNNING with mode "sync". */
  async createRun(
    metadata: RunMetadata,
    options: CommandOptions & { mode?: "queued" | "sync" } = {},
  ): Promise<RunState> {
    const { run_id: _runId, ...fields } = metadataToWire(metadata);
    return this.#command(metadata.runId, "create", { ...fields, mode: options.mode }, options);
  }

  /** QUEUED -> RUNNING. */
  start(runId: string, options: CommandOptions & { worker?: string } = {}): Promise<RunState> {
    return this.#command(runId, "start", { worker: options.worker }, options);
  }

  /** RUNNING -> PAUSED. */
  pause(runId: string, options: CommandOptions & { reason?: string } = {}): Promise<RunState> {
    return this.#command(runId, "pause", { reason: options.reason }, options);
  }

  /** PAUSED -> RUNNING. */
  resume(runId: string, options: CommandOptions & { reason?: string } = {}): Promise<RunState> {
    return this.#command(runId, "resume", { reason: options.reason }, options);
  }

  /** RUNNING -> QUEUED, attempt + 1. */
  retry(
    runId: string,
    options: CommandOptions & { error?: JsonValue; reason?: string } = {},
  ): Promise<RunState> {
    return this.#command(runId, "retry", { error: options.error, reason: options.reason }, options);
  }

  /** Cancel: RUNNING -> CANCELLING; QUEUED, PAUSED or CANCELLING -> CANCELLED. */
  cancel(runId: string, options: CommandOptions & { reason?: string } = {}): Promise<RunState> {
    return this.#command(runId, "cancel", { reason: options.reason }, options);
  }

  /** RUNNING or CANCELLING -> SUCCEEDED, keeping `output`. */
  succeed(runId: string, options: CommandOptions & { output?: JsonValue } = {}): Promise<RunState> {
    return this.#command(runId, "succeed", { output: options.output }, options);
  }

  /** QUEUED, RUNNING or CANCELLING -> FAILED, keeping `error`. */
  fail(runId: string, options: CommandOptions & { error?: JsonValue } = {}): Promise<RunState> {
    return this.#command(runId, "fail", { error: options.error }, options);
  }

  /** QUEUED, RUNNING or PAUSED -> TIMED_OUT. */
  timeOut(
    runId: string,
    options: CommandOptions & { reason?: string; error?: JsonValue } = {},
  ): Promise<RunState> {
    return this.#command(runId, "time_out", { reason: options.reason, error: options.error }, options);
  }

  /** Record one event: steps and custom types keep the status, lifecycle types move it. */
  record(runId: string, event: RunEventInput, options: CommandOptions = {}): Promise<RunState> {
    const wire = eventToWire(event);
    if (options.idempotencyKey !== undefined && event.eventId === undefined) {
      wire["event_id"] = options.idempotencyKey;
    }
    return this.#command(runId, "record", wire, options);
  }

  // -- live ---------------------------------------------------------------------------------

  /** Follow one run's events, stored then live (resumes by seq after a dropped connection). */
  followRun(runId: string, options: { afterSeq?: number; signal?: AbortSignal } = {}): Follower {
    const path = `/v1/runs/${segment(runId)}/events/stream`;
    return this.#follow(path, String(options.afterSeq ?? 0), options.signal);
  }

  /** Follow every newly committed event of the store (from `cursor`, or from now). */
  followFeed(options: { cursor?: string; fromStart?: boolean; signal?: AbortSignal } = {}): Follower {
    const path = options.fromStart && options.cursor === undefined ? "/v1/feed/stream?from=start" : "/v1/feed/stream";
    return this.#follow(path, options.cursor, options.signal);
  }

  #follow(path: string, startId: string | undefined, signal: AbortSignal | undefined): Follower {
    const client = this;
    let lastEventId = startId;
    const iterate = async function* (): AsyncGenerator<RunEventPersisted> {
      // Without a starting cursor the server starts at the feed's head: pin it, so that a
      // reconnect before the first event resumes there and not at a later head.
      if (lastEventId === undefined && !path.includes("from=start")) {
        lastEventId = ((await client.#call("GET", "/v1/feed/head")) as Wire)["cursor"] as string;
      }
      for (;;) {
        if (signal?.aborted) return;
        let response: Response;
        try {
          response = await client.#fetch(`${client.#baseUrl}${path}`, {
            headers: {
              ...client.#headers,
              Accept: "text/event-stream",
              ...(lastEventId === undefined ? {} : { "Last-Event-ID": lastEventId }),
            },
            ...(signal === undefined ? {} : { signal }),
          });
        } catch {
          if (signal?.aborted) return;
          await sleep(1000);
          continue;
        }
        if (!response.ok || response.body === null) {
          const error = problemError(response.status, await response.text());
          if (!(error instanceof StoreUnavailableError)) throw error;
          await sleep(1000);
          continue;
        }
        try {
          for await (const message of readSse(response.body)) {
            if (message.event === "error") throw problemError(503, message.data);
            const event = eventFromWire(parseJson(message.data) as Wire);
            if (message.id !== undefined) lastEventId = message.id;
            yield event;
          }
        } catch (error) {
          if (signal?.aborted) return;
          if (error instanceof RunStateError && !(error instanceof StoreUnavailableError)) throw error;
        }
        // The stream ended or broke: reconnect where we were, as EventSource does.
        await sleep(1000);
      }
    };
    return {
      get lastEventId() {
        return lastEventId;
      },
      [Symbol.asyncIterator]: () => iterate(),
    };
  }
}

function problemError(status: number, text: string): RunStateError {
  let problem: Problem = { detail: `HTTP ${status}` };
  try {
    const parsed = parseJson(text);
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
      problem = parsed as Problem;
    }
  } catch {
    // Not a problem document (a proxy's page, say): keep the status only.
  }
  return errorFromProblem(status, problem);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
