/** runstate's TypeScript client: the store interface IRunStateStore over the runstate HTTP API. */

export { RunStateClient, eventFromWire } from "./client.js";
export type { ClientOptions, CommandOptions, Follower } from "./client.js";
export {
  AccessDeniedError,
  ConcurrencyConflictError,
  InvalidInputError,
  InvalidTransitionError,
  RunAlreadyExistsError,
  RunNotFoundError,
  RunStateError,
  StoreUnavailableError,
  errorFromProblem,
} from "./errors.js";
export type { Problem } from "./errors.js";
export { parseJson, stringifyJson } from "./json.js";
export type { JsonValue } from "./json.js";
export type {
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
