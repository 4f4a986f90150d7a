// Not run: type-checked (`npm run typecheck`). Each `@ts-expect-error`
// must be an error, or the check fails: the generated types catch these.
import { CapyDB, type Job } from "../src/index.js";

const capy = new CapyDB({ baseUrl: "http://127.0.0.1:1", token: "capy_live_x" });

export async function wrong(): Promise<void> {
  // @ts-expect-error a required body field (`name`) is missing
  await capy.projects.create({});
  // @ts-expect-error `nme` is not a field of CreateProject
  await capy.projects.create({ nme: "x" });
  // @ts-expect-error the raw client's body is typed too: `name` is a string
  await capy.raw.POST("/v1/projects", { body: { name: 42 } });
  // @ts-expect-error the mode is one of `clone` or `empty`
  await capy.previews.create("prj_1", { name: "pr", mode: "copy" });
  // @ts-expect-error a job has `state`, not `status`
  ((job: Job) => job.status)(await capy.jobs.get("job_1"));
  // @ts-expect-error no such path
  await capy.raw.GET("/v1/project");
}
