// Starts a real capydb-local for the tests: the binary named by
// CAPYDB_LOCAL_BIN (default: the workspace's debug build), on a free
// loopback port, in a temporary data dir, on the PostgreSQL server of
// CAPYDB_TEST_POSTGRES_URL when set (else capydb-local starts its own).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export interface Server {
  base: string;
  key: string;
  orgId: string;
  stop(): Promise<void>;
}

const bin = process.env.CAPYDB_LOCAL_BIN ?? resolve(import.meta.dirname, "../../../../target/debug/capydb-local");

export async function startServer(args: string[] = []): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), "capydb-sdk-"));
  const postgres = process.env.CAPYDB_TEST_POSTGRES_URL;
  const child: ChildProcess = spawn(
    bin,
    ["--listen", "127.0.0.1:0", "--data-dir", join(dir, "data"), ...(postgres ? ["--postgres-url", postgres] : []), ...args],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "warn" } },
  );
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const value = (name: string) => new RegExp(`^${name}=(.*)$`, "m").exec(out)?.[1];
  const deadline = Date.now() + 120_000;
  while (!value("CAPYDB_API_KEY")) {
    if (child.exitCode !== null) throw new Error(`capydb-local exited (${child.exitCode}):\n${err}`);
    if (Date.now() > deadline) throw new Error(`capydb-local did not start in 120 s:\n${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const base = value("CAPYDB_BASE")!;
  if (!base.startsWith("http://127.0.0.1:")) throw new Error(`refusing a non-loopback base: ${base}`);
  return {
    base,
    key: value("CAPYDB_API_KEY")!,
    orgId: value("CAPYDB_ORG_ID")!,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once("exit", r)));
      spawnSync(bin, ["reset", "--data-dir", join(dir, "data")], { stdio: "ignore" });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
