// A server with a low rate limit: the SDK waits out `429`s.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { CapyDB } from "../src/index.js";
import { startServer, type Server } from "./server.js";

let server: Server;

before(async () => {
  server = await startServer(["--rate-limit-per-minute", "3"]);
});

after(async () => {
  await server?.stop();
});

test("a 429 is retried after Retry-After", async () => {
  const statuses: number[] = [];
  const counting: typeof fetch = async (input, init) => {
    const response = await fetch(input, init);
    statuses.push(response.status);
    return response;
  };
  const capy = new CapyDB({ baseUrl: server.base, token: server.key, fetch: counting, maxRetries: 2 });
  // Four calls in a minute that allows three: one meets a 429 and is retried.
  for (let i = 0; i < 4; i++) {
    const me = await capy.me();
    assert.equal(me.kind, "api_key");
  }
  assert.ok(statuses.includes(429), `a 429 was met: ${statuses}`);
  assert.equal(statuses.at(-1), 200, `and retried to success: ${statuses}`);
});
