// graphile-worker's side of the lifecycle benchmark: add N no-op jobs in batches (`addJobs`, 1,000 per call), then
// run one worker until every job is complete (deleted), in graphile-worker's tuned mode from its performance page
// (concurrentJobs 24, maxPoolSize 25, localQueue 500, batched completions). Prints one JSON line.
//
// `add` mode stops after adding the jobs: the scheduling benchmark (add_jobs_per_second).
//
//   node graphile.mjs N [default|tuned|add]      (DATABASE_URL names an empty database)
import { makeWorkerUtils, run } from "graphile-worker";

const n = Number(process.argv[2] ?? 100000);
const mode = process.argv[3] ?? "tuned";
const connectionString = process.env.DATABASE_URL;
if (!connectionString || !Number.isInteger(n) || n < 1 || !["default", "tuned", "add"].includes(mode)) {
  console.error("usage: DATABASE_URL=postgres://… node graphile.mjs N [default|tuned|add]");
  process.exit(2);
}

const utils = await makeWorkerUtils({ connectionString });
await utils.migrate();
const started = performance.now();
for (let i = 0; i < n; i += 1000) {
  const batch = [];
  for (let k = i; k < Math.min(n, i + 1000); k++) batch.push({ identifier: "noop", payload: { n: k } });
  await utils.addJobs(batch);
}
const added = performance.now();
if (mode === "add") {
  const stored = await utils.withPgClient((c) => c.query("select count(*)::int as n from graphile_worker.jobs"));
  await utils.release();
  if (stored.rows[0].n !== n) {
    console.error(`${stored.rows[0].n} of ${n} jobs were added`);
    process.exit(1);
  }
  const seconds = (added - started) / 1000;
  console.log(JSON.stringify({ peer: "graphile-worker add_jobs", tasks: n, seconds, tasks_per_second: n / seconds }));
  process.exit(0);
}

let executed = 0;
let allExecuted;
const finished = new Promise((resolve) => (allExecuted = resolve));
const tuned = {
  concurrentJobs: 24,
  maxPoolSize: 25,
  localQueue: { size: 500 },
  completeJobBatchDelay: 0,
  failJobBatchDelay: 0,
};
const runner = await run({
  connectionString,
  noHandleSignals: true,
  logger: undefined,
  preset: { worker: mode === "tuned" ? tuned : {} },
  taskList: {
    noop: async () => {
      if (++executed === n) allExecuted();
    },
  },
});
await finished;
await runner.stop(); // flushes the batched completions
const done = performance.now();
const left = await utils.withPgClient((c) => c.query("select count(*)::int as n from graphile_worker.jobs"));
await utils.release();
if (left.rows[0].n !== 0) {
  console.error(`${left.rows[0].n} jobs are not complete`);
  process.exit(1);
}
const seconds = (done - started) / 1000;
console.log(
  JSON.stringify({
    peer: `graphile-worker ${mode}`,
    tasks: n,
    seconds,
    tasks_per_second: n / seconds,
    add_jobs_per_second: n / ((added - started) / 1000),
    run_jobs_per_second: n / ((done - added) / 1000),
  }),
);
