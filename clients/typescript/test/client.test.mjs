// The TypeScript client against a real `runstate serve` that this test starts.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import {
  AccessDeniedError,
  ConcurrencyConflictError,
  InvalidInputError,
  InvalidTransitionError,
  RunAlreadyExistsError,
  RunStateClient,
  RunStateError,
  parseJson,
  stringifyJson,
} from "../dist/index.js";

const WRITE_TOKEN = "ts-client-write-token-0123";
const READ_TOKEN = "ts-client-read-token-0123";
const RUNSTATE = process.env.RUNSTATE_BIN ?? "runstate";

let server;
let folder;
let baseUrl;
let client;

const freePort = () =>
  new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });

async function waitUntilReady(url, child) {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`runstate serve exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error("runstate serve did not become ready");
}

const newRunId = () => `ts-${crypto.randomUUID()}`;

before(async () => {
  folder = mkdtempSync(join(tmpdir(), "runstate-ts-"));
  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  server = spawn(
    RUNSTATE,
    ["serve", "--url", `sqlite:///${join(folder, "ts.db")}`, "--port", String(port), "--no-access-log"],
    {
      env: { ...process.env, RUNSTATE_API_TOKENS: `write ${WRITE_TOKEN}\nread ${READ_TOKEN}\n` },
      stdio: ["ignore", "inherit", "inherit"],
    },
  );
  await waitUntilReady(baseUrl, server);
  client = new RunStateClient({ baseUrl, token: WRITE_TOKEN });
});

after(() => {
  server?.kill("SIGTERM");
  if (folder) rmSync(folder, { recursive: true, force: true });
});

describe("IRunStateStore over HTTP", () => {
  it("bootstraps a run: metadata, first events, append result", async () => {
    const runId = newRunId();
    const result = await client.bootstrapRunTx({
      metadata: { runId, workflow: "billing", tenantId: "acme", labels: { team: "payments" } },
      firstEvents: [{ type: "RunQueued", payload: { queue: "default" } }, { type: "RunStarted" }],
    });
    assert.equal(result.runId, runId);
    assert.equal(result.lastSeq, 2);
    assert.deepEqual(
      result.appended.map((e) => [e.seq, e.type]),
      [
        [1, "RunQueued"],
        [2, "RunStarted"],
      ],
    );
    assert.deepEqual(result.deduplicated, []);
    const metadata = await client.getRunMetadataByRunId(runId);
    assert.equal(metadata.workflow, "billing");
    assert.equal(metadata.tenantId, "acme");
    assert.deepEqual(metadata.labels, { team: "payments" });
    assert.match(metadata.createdAt, /^\d{4}-\d{2}-\d{2}T/);
  });

  it("refuses a duplicate bootstrap with RunAlreadyExistsError", async () => {
    const runId = newRunId();
    const input = { metadata: { runId, workflow: "wf" }, firstEvents: [{ type: "RunQueued", eventId: "q" }] };
    await client.bootstrapRunTx(input);
    await assert.rejects(client.bootstrapRunTx(input), (error) => {
      assert.ok(error instanceof RunAlreadyExistsError);
      assert.ok(error instanceof RunStateError);
      assert.equal(error.code, "RUN_ALREADY_EXISTS");
      assert.equal(error.runId, runId);
      assert.equal(error.sameRequest, true);
      return true;
    });
    await assert.rejects(
      client.bootstrapRunTx({ metadata: { runId, workflow: "other" }, firstEvents: [{ type: "RunQueued" }] }),
      (error) => error instanceof RunAlreadyExistsError && error.sameRequest === false,
    );
  });

  it("refuses an append with a stale expected seq and writes nothing", async () => {
    const runId = newRunId();
    await client.bootstrapRunTx({ metadata: { runId, workflow: "wf" }, firstEvents: [{ type: "RunQueued" }] });
    const next = await client.appendAndEnqueueTx(runId, [{ type: "StepStarted" }], 1);
    assert.equal(next.lastSeq, 2);
    await assert.rejects(client.appendAndEnqueueTx(runId, [{ type: "StepStarted" }], 1), (error) => {
      assert.ok(error instanceof ConcurrencyConflictError);
      assert.equal(error.expectedSeq, 1);
      assert.equal(error.actualSeq, 2);
      return true;
    });
    assert.equal((await client.listEvents(runId)).length, 2);
  });

  it("lists events in seq order, pages them, and keeps big integers exact", async () => {
    const runId = newRunId();
    const payload = { big: 2n ** 70n, neg: -12345678901234567890n, f: 0.1, s: "héllo 𝄞", nested: { a: [[]] } };
    await client.bootstrapRunTx({ metadata: { runId, workflow: "wf", input: payload }, firstEvents: [{ type: "RunQueued", payload }] });
    await client.appendAndEnqueueTx(runId, [{ type: "A" }, { type: "B" }, { type: "C", eventId: "c" }]);
    const dedup = await client.appendAndEnqueueTx(runId, [{ type: "C", eventId: "c" }]);
    assert.deepEqual(dedup.deduplicated, ["c"]);
    const events = await client.listEvents(runId);
    assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4]);
    assert.deepEqual(events[0].payload, payload);
    assert.deepEqual((await client.listEvents(runId, { afterSeq: 2, limit: 1 })).map((e) => e.type), ["B"]);
    assert.deepEqual((await client.getRunMetadataByRunId(runId)).input, payload);
    assert.deepEqual(await client.listEvents(newRunId()), []);
    assert.equal(await client.getRunMetadataByRunId(newRunId()), null);
    assert.equal(stringifyJson(parseJson('{"n":1180591620717411303424}')), '{"n":1180591620717411303424}');
  });

  it("refuses bad input with InvalidInputError and its field", async () => {
    const runId = newRunId();
    await assert.rejects(
      client.bootstrapRunTx({ metadata: { runId, workflow: "" }, firstEvents: [{ type: "RunQueued" }] }),
      (error) => error instanceof InvalidInputError && error.field === "metadata.workflow",
    );
    await assert.rejects(
      client.bootstrapRunTx({ metadata: { runId, workflow: "w" }, firstEvents: [{ type: "Q", payload: { v: NaN } }] }),
      (error) => error instanceof InvalidInputError,
    );
    assert.equal(await client.getRunMetadataByRunId(runId), null);
  });
});

describe("engine commands", () => {
  it("drives a run and makes retried commands no-ops with an idempotency key", async () => {
    const runId = newRunId();
    const created = await client.createRun({ runId, workflow: "etl" }, { idempotencyKey: "create-1" });
    assert.equal(created.status, "QUEUED");
    const started = await client.start(runId, { worker: "w-1", idempotencyKey: "start-1" });
    const again = await client.start(runId, { worker: "w-1", idempotencyKey: "start-1" });
    assert.equal(started.status, "RUNNING");
    assert.equal(again.last_seq, started.last_seq);
    await client.record(runId, { type: "StepStarted", payload: { step: "load" } });
    await assert.rejects(client.resume(runId), (error) => {
      assert.ok(error instanceof InvalidTransitionError);
      assert.equal(error.fromStatus, "RUNNING");
      assert.equal(error.eventType, "RunResumed");
      return true;
    });
    const done = await client.succeed(runId, { output: { rows: 3 } });
    assert.equal(done.status, "SUCCEEDED");
    const { state } = await client.getRun(runId);
    assert.equal(state.is_terminal, true);
    const { runs } = await client.listRuns({ status: ["SUCCEEDED"], workflow: "etl" });
    assert.ok(runs.some((run) => run.metadata.runId === runId));
  });

  it("needs a token of the right scope", async () => {
    const reader = new RunStateClient({ baseUrl, token: READ_TOKEN });
    assert.equal(await reader.getRunMetadataByRunId(newRunId()), null);
    await assert.rejects(
      reader.createRun({ runId: newRunId(), workflow: "w" }),
      (error) => error instanceof AccessDeniedError && error.code === "FORBIDDEN",
    );
    const stranger = new RunStateClient({ baseUrl });
    await assert.rejects(stranger.listEvents("r"), (error) => error instanceof AccessDeniedError && error.code === "UNAUTHORIZED");
    assert.ok(!JSON.stringify(client).includes(WRITE_TOKEN));
  });
});

describe("live", () => {
  it("follows a run and sees events committed after it started", async () => {
    const runId = newRunId();
    await client.bootstrapRunTx({ metadata: { runId, workflow: "wf" }, firstEvents: [{ type: "RunQueued" }] });
    const controller = new AbortController();
    const follower = client.followRun(runId, { signal: controller.signal });
    const seen = [];
    const reading = (async () => {
      for await (const event of follower) {
        seen.push(event.seq);
        if (seen.length === 3) break;
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 200));
    await client.appendAndEnqueueTx(runId, [{ type: "StepStarted" }]);
    await client.appendAndEnqueueTx(runId, [{ type: "StepSucceeded" }]);
    await reading;
    controller.abort();
    assert.deepEqual(seen, [1, 2, 3]);
    assert.equal(follower.lastEventId, "3");
  });

  it("follows the store-wide feed from now, with a resumable cursor", async () => {
    const runId = newRunId();
    const follower = client.followFeed();
    const seen = [];
    const reading = (async () => {
      for await (const event of follower) {
        if (event.runId !== runId) continue;
        seen.push(event.seq);
        if (seen.length === 2) break;
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 200));
    await client.bootstrapRunTx({ metadata: { runId, workflow: "wf" }, firstEvents: [{ type: "RunQueued" }, { type: "RunStarted" }] });
    await reading;
    assert.deepEqual(seen, [1, 2]);
    assert.equal(typeof follower.lastEventId, "string");
  });
});
