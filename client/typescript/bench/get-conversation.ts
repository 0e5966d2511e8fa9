/**
 * Load generator for bench/ts_client_bench.py: GetConversation through this
 * package's client (connect-node gRPC transport, one HTTP/2 connection) with
 * BENCH_CONCURRENCY calls in flight for BENCH_SECONDS after BENCH_WARMUP;
 * prints one JSON line (calls, seconds, p50_ms, p99_ms, errors).
 */
import { createConvhubClient } from "../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const hub = createConvhubClient({ address: env("CONVHUB_GRPC_ADDRESS"), token: env("CONVHUB_TOKEN"), timeoutMs: 10_000 });
const id = env("BENCH_CONVERSATION_ID");
const seconds = Number(env("BENCH_SECONDS"));
const warmup = Number(process.env.BENCH_WARMUP ?? "1");
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? "32");

const latencies: number[] = [];
const errors = new Map<string, number>();
const start = performance.now();
const measureStart = start + warmup * 1000;
const deadline = measureStart + seconds * 1000;

async function worker(): Promise<void> {
  for (;;) {
    const t0 = performance.now();
    if (t0 >= deadline) return;
    try {
      await hub.conversations.getConversation({ id });
    } catch (error) {
      const key = String(error);
      errors.set(key, (errors.get(key) ?? 0) + 1);
      continue;
    }
    const t1 = performance.now();
    if (t1 >= measureStart && t1 <= deadline) latencies.push(t1 - t0);
  }
}

await Promise.all(Array.from({ length: concurrency }, worker));
latencies.sort((a, b) => a - b);
const pick = (q: number) => latencies[Math.min(latencies.length - 1, Math.round(q * (latencies.length - 1)))] ?? NaN;
console.log(
  JSON.stringify({
    calls: latencies.length,
    seconds,
    p50_ms: pick(0.5),
    p99_ms: pick(0.99),
    errors: [...errors.values()].reduce((a, b) => a + b, 0),
    error_samples: [...errors.keys()].slice(0, 3),
  }),
);
