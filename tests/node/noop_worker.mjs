// The physical limit for the benchmarks: the real Node BullMQ Worker with a no-op processor.
// Usage: node noop_worker.mjs --redis redis://127.0.0.1:6379/1 --expect N [--queue crm-events] [--prefix bull]
//        [--concurrency 32] [--keep-completed 10000] [--timeout-s 300]
// Prints "ready" once connected, then one JSON line {"completed": N, "seconds": s} when N jobs completed
// (seconds from the first to the last completion), and exits. Exits 2 on timeout.
import { Worker } from "bullmq";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

const url = new URL(arg("redis", process.env.BULLMQ_REDIS_URL || "redis://127.0.0.1:6379/1"));
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  db: Number((url.pathname || "/0").slice(1) || 0),
  maxRetriesPerRequest: null,
};
const expect = Number(arg("expect", "0"));
const keep = Number(arg("keep-completed", "10000"));
const timeoutMs = Number(arg("timeout-s", "300")) * 1000;

const worker = new Worker(arg("queue", process.env.BULLMQ_QUEUE || "crm-events"), async () => {}, {
  connection,
  prefix: arg("prefix", process.env.BULLMQ_PREFIX || "bull"),
  concurrency: Number(arg("concurrency", "32")),
  removeOnComplete: { count: keep },
  autorun: false,
});

let completed = 0;
let first = 0;
let done;
const finished = new Promise((resolve) => (done = resolve));
worker.on("completed", () => {
  const now = performance.now();
  if (completed === 0) first = now;
  completed += 1;
  if (completed >= expect) done(now);
});
worker.on("error", (err) => process.stderr.write(`worker error: ${err}\n`));

await worker.waitUntilReady();
process.stdout.write("ready\n");
worker.run();
const timer = setTimeout(() => done(null), timeoutMs);
const last = expect > 0 ? await finished : performance.now();
clearTimeout(timer);
await worker.close();
process.stdout.write(JSON.stringify({ completed, seconds: last === null ? null : (last - first) / 1000 }) + "\n");
process.exit(last === null ? 2 : 0);
