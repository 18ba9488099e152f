/** Typed errors: one class per stable code of the runstate API, all under RunStateError. */

import type { JsonValue } from "./json.js";

/** An RFC 9457 problem document as the API sends it. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  [field: string]: JsonValue | undefined;
}

/** The root of every error this client raises on purpose; `code` is the API's stable code. */
export class RunStateError extends Error {
  readonly code: string;
  readonly status: number | undefined;
  readonly problem: Problem | undefined;

  constructor(message: string, code: string, status?: number, problem?: Problem) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.problem = problem;
  }
}

/** bootstrapRunTx found the run already stored; `sameRequest` tells whether by this request. */
export class RunAlreadyExistsError extends RunStateError {
  readonly runId: string;
  readonly sameRequest: boolean | null;

  constructor(message: string, runId: string, sameRequest: boolean | null, problem?: Problem) {
    super(message, "RUN_ALREADY_EXISTS", 409, problem);
    this.runId = runId;
    this.sameRequest = sameRequest;
  }
}

/** The run has no metadata in the store (appends never create runs). */
export class RunNotFoundError extends RunStateError {
  readonly runId: string;

  constructor(message: string, runId: string, problem?: Problem) {
    super(message, "RUN_NOT_FOUND", 404, problem);
    this.runId = runId;
  }
}

/** expectedSeq differed from the run's last seq; nothing was written. */
export class ConcurrencyConflictError extends RunStateError {
  readonly runId: string;
  readonly expectedSeq: number;
  readonly actualSeq: number;

  constructor(
    message: string,
    runId: string,
    expectedSeq: number,
    actualSeq: number,
    problem?: Problem,
  ) {
    super(message, "CONCURRENCY_CONFLICT", 409, problem);
    this.runId = runId;
    this.expectedSeq = expectedSeq;
    this.actualSeq = actualSeq;
  }
}

/** The server (or this client, before sending) refused the input; nothing was written. */
export class InvalidInputError extends RunStateError {
  readonly field: string | null;

  constructor(message: string, field: string | null, status = 400, problem?: Problem) {
    super(message, "INVALID_INPUT", status, problem);
    this.field = field;
  }
}

/** The engine refused an event that is illegal from the run's status. */
export class InvalidTransitionError extends RunStateError {
  readonly runId: string;
  readonly fromStatus: string;
  readonly eventType: string;

  constructor(
    message: string,
    runId: string,
    fromStatus: string,
    eventType: string,
    problem?: Problem,
  ) {
    super(message, "INVALID_TRANSITION", 409, problem);
    this.runId = runId;
    this.fromStatus = fromStatus;
    this.eventType = eventType;
  }
}

/** The server or its database could not be reached; `retryable` says whether to try again. */
export class StoreUnavailableError extends RunStateError {
  readonly retryable: boolean;

  constructor(message: string, retryable: boolean, status?: number, problem?: Problem) {
    super(message, "STORE_UNAVAILABLE", status, problem);
    this.retryable = retryable;
  }
}

/** The token is missing or unknown (UNAUTHORIZED) or of too small a scope (FORBIDDEN). */
export class AccessDeniedError extends RunStateError {}

const text = (value: JsonValue | undefined): string => (typeof value === "string" ? value : "");
const int = (value: JsonValue | undefined): number => Number(value ?? 0);

/** Rebuild the typed error a problem response describes. */
export function errorFromProblem(status: number, problem: Problem): RunStateError {
  const detail = text(problem.detail) || text(problem.title) || `HTTP ${status}`;
  const runId = text(problem["run_id"]);
  switch (problem.code) {
    case "RUN_ALREADY_EXISTS": {
      const same = problem["same_request"];
      return new RunAlreadyExistsError(detail, runId, typeof same === "boolean" ? same : null, problem);
    }
    case "RUN_NOT_FOUND":
      return new RunNotFoundError(detail, runId, problem);
    case "CONCURRENCY_CONFLICT":
      return new ConcurrencyConflictError(
        detail,
        runId,
        int(problem["expected_seq"]),
        int(problem["actual_seq"]),
        problem,
      );
    case "INVALID_TRANSITION":
      return new InvalidTransitionError(
        detail,
        runId,
        text(problem["from_status"]),
        text(problem["event_type"]),
        problem,
      );
    case "INVALID_INPUT":
    case "BODY_TOO_LARGE":
    case "UNSUPPORTED_MEDIA_TYPE": {
      const field = problem["field"];
      return new InvalidInputError(detail, typeof field === "string" ? field : null, status, problem);
    }
    case "UNAUTHORIZED":
    case "FORBIDDEN":
      return new AccessDeniedError(detail, problem.code, status, problem);
    case "STORE_UNAVAILABLE":
      return new StoreUnavailableError(detail, problem["retryable"] !== false, status, problem);
    default:
      if (status >= 500) return new StoreUnavailableError(`server error ${status}: ${detail}`, true, status, problem);
      return new RunStateError(detail, text(problem.code) || `HTTP_${status}`, status, problem);
  }
}
