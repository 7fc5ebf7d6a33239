// Publishes jobs to a BullMQ queue with the real Node client, as the Messaging service does.
// Input: JSON lines on stdin, each {"name": "...", "data": <any>, "opts": {...}?}.
// Usage: node publish.mjs --redis redis://127.0.0.1:6379/1 [--queue crm-events] [--prefix bull] [--chunk 1000]
// Prints one JSON line: {"published": N, "ids": [...]} (ids only with --ids).
import { Queue } from "bullmq";
import { createInterface } from "node:readline";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

const url = new URL(arg("redis", process.env.BULLMQ_REDIS_URL || "redis://127.0.0.1:6379/1"));
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  db: Number((url.pathname || "/0").slice(1) || 0),
};
const queue = new Queue(arg("queue", process.env.BULLMQ_QUEUE || "crm-events"), {
  connection,
  prefix: arg("prefix", process.env.BULLMQ_PREFIX || "bull"),
});
const chunk = Number(arg("chunk", "1000"));
const wantIds = process.argv.includes("--ids");

const ids = [];
let published = 0;
let pending = [];

async function flush() {
  if (pending.length === 0) return;
  const jobs = await queue.addBulk(pending);
  published += jobs.length;
  if (wantIds) ids.push(...jobs.map((j) => j.id));
  pending = [];
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (!line.trim()) continue;
  const job = JSON.parse(line);
  pending.push({ name: job.name, data: job.data, opts: job.opts || {} });
  if (pending.length >= chunk) await flush();
}
await flush();
await queue.close();
process.stdout.write(JSON.stringify(wantIds ? { published, ids } : { published }) + "\n");
