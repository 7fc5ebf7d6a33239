// Publishes jobs to a BullMQ queue with the real Node client, as the Messaging service does.
// Input: JSON lines on stdin, each {"name": "...", "data": <any>, "opts": {...}?}.
// Usage: node publish.mjs --redis redis://127.0.0.1:6379/1 [--queue crm-events] [--prefix bull] [--chunk 1000]
// Prints one JSON line: {"published": N, "ids": [...]} (ids only with --ids).
//
// With --serve, stays up and answers requests on stdin, so that a test suite pays Node's start-up once:
// a header line {"redis", "queue", "prefix", "chunk", "ids", "count"}, then `count` job lines; the answer is
// one line, as above, or {"error": "..."}. Queues are kept open per (redis, queue, prefix).
import { Queue } from "bullmq";
import { createInterface } from "node:readline";

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

function queueFor(redis, name, prefix) {
  const url = new URL(redis);
  const connection = {
    host: url.hostname,
    port: Number(url.port || 6379),
    db: Number((url.pathname || "/0").slice(1) || 0),
  };
  return new Queue(name, { connection, prefix });
}

// Publishes `jobs` (parsed lines) with addBulk in chunks; returns {published, ids?}.
async function publish(queue, jobs, chunk, wantIds) {
  const ids = [];
  let published = 0;
  for (let start = 0; start < jobs.length; start += chunk) {
    const added = await queue.addBulk(
      jobs.slice(start, start + chunk).map((job) => ({ name: job.name, data: job.data, opts: job.opts || {} })),
    );
    published += added.length;
    if (wantIds) ids.push(...added.map((j) => j.id));
  }
  return wantIds ? { published, ids } : { published };
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });

if (process.argv.includes("--serve")) {
  const queues = new Map();
  let request = null;
  let jobs = [];
  const answer = async () => {
    const key = JSON.stringify([request.redis, request.queue, request.prefix]);
    if (!queues.has(key)) queues.set(key, queueFor(request.redis, request.queue, request.prefix));
    try {
      const result = await publish(queues.get(key), jobs, request.chunk || 1000, request.ids);
      process.stdout.write(JSON.stringify(result) + "\n");
    } catch (error) {
      process.stdout.write(JSON.stringify({ error: String(error && error.stack ? error.stack : error) }) + "\n");
    }
    request = null;
    jobs = [];
  };
  for await (const line of lines) {
    if (request === null) {
      if (!line.trim()) continue;
      request = JSON.parse(line);
      if (request.count === 0) await answer();
      continue;
    }
    jobs.push(JSON.parse(line));
    if (jobs.length === request.count) await answer();
  }
  await Promise.all([...queues.values()].map((queue) => queue.close()));
} else {
  // One-shot: publish while reading, a chunk at a time (the benchmark streams large files through this).
  const queue = queueFor(
    arg("redis", process.env.BULLMQ_REDIS_URL || "redis://127.0.0.1:6379/1"),
    arg("queue", process.env.BULLMQ_QUEUE || "crm-events"),
    arg("prefix", process.env.BULLMQ_PREFIX || "bull"),
  );
  const chunk = Number(arg("chunk", "1000"));
  const wantIds = process.argv.includes("--ids");
  const ids = [];
  let published = 0;
  let pending = [];
  for await (const line of lines) {
    if (!line.trim()) continue;
    pending.push(JSON.parse(line));
    if (pending.length >= chunk) {
      const result = await publish(queue, pending, chunk, wantIds);
      published += result.published;
      if (wantIds) ids.push(...result.ids);
      pending = [];
    }
  }
  const result = await publish(queue, pending, chunk, wantIds);
  published += result.published;
  if (wantIds) ids.push(...result.ids);
  await queue.close();
  process.stdout.write(JSON.stringify(wantIds ? { published, ids } : { published }) + "\n");
}
