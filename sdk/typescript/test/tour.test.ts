// The quick tour through the SDK against a real capydb-local and its
// PostgreSQL: a project, a clone preview, its connection used with `pg`.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";

import { CapyDB, CapyDBError, JobFailedError, type Job } from "../src/index.js";
import { startServer, type Server } from "./server.js";

let server: Server;
let capy: CapyDB;
let projectId: string;

before(async () => {
  server = await startServer();
  capy = new CapyDB({ baseUrl: server.base, token: server.key });
  const started = await capy.projects.create({ name: "sdk-tour" });
  const seen: string[] = [];
  const job = await started.wait({ onProgress: (j: Job) => seen.push(j.state) });
  assert.equal(job.state, "completed");
  assert.ok(seen.length >= 1 && seen.at(-1) === "completed", `progress reported: ${seen}`);
  projectId = started.project.id;
});

after(async () => {
  await server?.stop();
});

test("a clone preview is usable once waitForJob resolves", async () => {
  const project = await capy.projects.connections(projectId);
  const owner = new pg.Client({ connectionString: project[0]!.uri });
  await owner.connect();
  await owner.query("create table items (n int); insert into items values (7)");
  await owner.end();

  const preview = await capy.previews.create(projectId, { name: "pr-1", mode: "clone", ttl_hours: 1 });
  const job = await capy.waitForJob(preview.job.id, { timeout: 120_000 });
  assert.equal(job.state, "completed");
  const { connections } = await preview.wait();
  const client = new pg.Client({ connectionString: connections[0]!.uri });
  await client.connect();
  const one = await client.query("select 1 as one");
  assert.equal(one.rows[0].one, 1);
  const copied = await client.query("select n from items");
  assert.deepEqual(copied.rows, [{ n: 7 }], "the clone has the project's data");
  await client.end();
});

test("a failed job makes waitForJob throw with the job's error", async () => {
  const [owner] = await capy.projects.connections(projectId);
  const wrong = new URL(owner!.uri);
  wrong.password = "not-the-password";
  const { data, error } = await capy.raw.POST("/v1/projects/{project_id}/imports", {
    params: { path: { project_id: projectId } },
    body: { source_url: wrong.toString() },
  });
  assert.equal(error, undefined);
  await assert.rejects(capy.waitForJob(data!.job.id, { timeout: 120_000 }), (e: unknown) => {
    assert.ok(e instanceof JobFailedError, String(e));
    assert.equal(e.job.state, "failed");
    assert.match(e.message, /could not connect to the import source or log in/);
    assert.ok(!e.message.includes("not-the-password"));
    return true;
  });
});

test("a missing scope throws CapyDBError with status 403 and the server's message", async () => {
  const { data, error } = await capy.raw.POST("/v1/organizations/{org_id}/api-keys", {
    params: { path: { org_id: server.orgId } },
    body: { name: "read only", scopes: ["projects:read"] },
  });
  assert.equal(error, undefined);
  const reader = new CapyDB({ baseUrl: server.base, token: data!.plaintext });
  assert.equal((await reader.projects.get(projectId)).id, projectId);
  await assert.rejects(reader.projects.create({ name: "nope" }), (e: unknown) => {
    assert.ok(e instanceof CapyDBError);
    assert.equal(e.status, 403);
    assert.match(e.message, /lacks the scope projects:write/);
    assert.match(e.requestId ?? "", /^req_/);
    return true;
  });
});

test("an idempotent retry of a create returns the same job", async () => {
  const key = `sdk-${Date.now()}`;
  const first = await capy.projects.create({ name: "idem" }, { idempotencyKey: key });
  const again = await capy.projects.create({ name: "idem" }, { idempotencyKey: key });
  assert.equal(again.job.id, first.job.id);
  assert.equal(again.project.id, first.project.id);
  // Without a key of the caller's, each call gets its own: two projects.
  const other = await capy.projects.create({ name: "idem" });
  assert.notEqual(other.project.id, first.project.id);
  await Promise.all([first.wait(), other.wait()]);
});

test("lists are iterated across pages", async () => {
  const ids: string[] = [];
  for await (const p of capy.paginate<{ id: string }>("/v1/projects", 1)) ids.push(p.id);
  assert.ok(ids.length >= 3, `${ids}`);
  assert.equal(new Set(ids).size, ids.length, "no project twice");
  assert.ok(ids.includes(projectId));
  const previews = [];
  for await (const p of capy.previews.list(projectId)) previews.push(p);
  assert.equal(previews.length, 1);
});
