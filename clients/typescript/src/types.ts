/**
 * The store's value types, in TypeScript's naming. Times are RFC 3339 strings as the server sends
 * them (microseconds kept; a Date would drop them); inputs also take a Date.
 */

import type { JsonValue } from "./json.js";

/** A JSON object, as event payloads are. */
export type JsonObject = { [key: string]: JsonValue };

/** What is known about a run when it is created; written once by bootstrapRunTx. */
export interface RunMetadata {
  runId: string;
  workflow: string;
  workflowVersion?: string | null;
  tenantId?: string | null;
  parentRunId?: string | null;
  input?: JsonValue;
  labels?: Record<string, string>;
  /** Default: now (set by the server). */
  createdAt?: string | Date;
  schemaVersion?: number;
}

/** An event to append; `eventId` is its idempotency key inside one run (default: a UUID). */
export interface RunEventInput {
  type: string;
  payload?: JsonObject;
  eventId?: string;
  schemaVersion?: number;
  occurredAt?: string | Date | null;
}

/** An event as stored: the input plus its run, per-run `seq` and store-wide `position`. */
export interface RunEventPersisted {
  runId: string;
  seq: number;
  position: number;
  type: string;
  payload: JsonObject;
  eventId: string;
  schemaVersion: number;
  occurredAt: string | null;
  recordedAt: string;
}

/** The first write of a run: its metadata and at least one first event. */
export interface RunBootstrapInput {
  metadata: RunMetadata;
  firstEvents: RunEventInput[];
}

/** What a write did: the events appended, the event ids skipped as duplicates, the last seq. */
export interface AppendResult {
  runId: string;
  appended: RunEventPersisted[];
  deduplicated: string[];
  lastSeq: number;
}

/** The store interface (docs/design.md, "The store contract"); `expectedSeq` is the optional optimistic check. */
export interface IRunStateStore {
  bootstrapRunTx(input: RunBootstrapInput): Promise<AppendResult>;
  appendAndEnqueueTx(
    runId: string,
    events: RunEventInput[],
    expectedSeq?: number,
  ): Promise<AppendResult>;
  listEvents(runId: string): Promise<RunEventPersisted[]>;
  getRunMetadataByRunId(runId: string): Promise<RunMetadata | null>;
}

/** Where a run is in its lifecycle. */
export type RunStatus =
  | "QUEUED"
  | "RUNNING"
  | "PAUSED"
  | "CANCELLING"
  | "CANCELLED"
  | "SUCCEEDED"
  | "FAILED"
  | "TIMED_OUT";

/** A run's projected state, as the engine commands return it (the API's field names). */
export interface RunState {
  run_id: string;
  workflow: string;
  workflow_version: string | null;
  tenant_id: string | null;
  parent_run_id: string | null;
  status: RunStatus;
  is_terminal: boolean;
  attempt: number;
  last_seq: number;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  finished_at: string | null;
  output: JsonValue;
  error: JsonValue;
  current_step: string | null;
  [field: string]: JsonValue | undefined;
}

/** One entry of `listRuns`. */
export interface ListedRun {
  metadata: RunMetadata;
  lastSeq: number;
  updatedAt: string;
  status: RunStatus;
  attempt: number;
}
