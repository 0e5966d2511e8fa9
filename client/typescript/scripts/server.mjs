// A convhub server for the tests and the REST type generator: the running one
// named by CONVHUB_GRPC_ADDRESS + CONVHUB_TOKEN (and CONVHUB_HTTP_URL for
// REST) when set, else a fresh `convhub serve` on SQLite in a temp dir, on
// free loopback ports, stopped (SIGTERM) when done.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const SERVING = /serving gRPC on (\S+?)(?:, REST on (\S+))?$/;
const START_TIMEOUT_MS = 60_000;

/** The python that has convhub installed: CONVHUB_PYTHON, else the repo's .venv, else python3. */
function python() {
  if (process.env.CONVHUB_PYTHON) return process.env.CONVHUB_PYTHON;
  const venv = join(REPO, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

/** @returns {Promise<{grpcAddress: string, httpUrl: string | undefined, token: string, stop: () => Promise<void>}>} */
export async function withServer() {
  const { CONVHUB_GRPC_ADDRESS, CONVHUB_TOKEN, CONVHUB_HTTP_URL } = process.env;
  if (CONVHUB_GRPC_ADDRESS && CONVHUB_TOKEN) {
    return { grpcAddress: CONVHUB_GRPC_ADDRESS, httpUrl: CONVHUB_HTTP_URL, token: CONVHUB_TOKEN, stop: async () => {} };
  }
  const dataDir = mkdtempSync(join(tmpdir(), "convhub-ts-"));
  const child = spawn(
    python(),
    ["-m", "convhub.server.cli", "serve", "--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"],
    {
      env: {
        ...process.env,
        CONVHUB_DATABASE_URL: `sqlite:///${join(dataDir, "convhub.db")}`,
        CONVHUB_DATA_DIR: dataDir,
        CONVHUB_LOG_LEVEL: process.env.CONVHUB_LOG_LEVEL ?? "WARNING",
      },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const exited = new Promise((resolveExit) => child.once("exit", resolveExit));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    return await new Promise((resolveStart, rejectStart) => {
      const lines = [];
      let buffered = "";
      let token;
      const timer = setTimeout(() => rejectStart(new Error(`convhub serve did not start:\n${lines.join("\n")}`)), START_TIMEOUT_MS);
      child.once("exit", (code) => {
        clearTimeout(timer);
        rejectStart(new Error(`convhub serve exited (${code}) before serving:\n${lines.join("\n")}`));
      });
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (chunk) => {
        buffered += chunk;
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          lines.push(line);
          // First start on an empty database: "Its API token, shown only now:" then the token.
          if (lines.at(-2)?.endsWith("shown only now:")) token = line;
          const match = SERVING.exec(line);
          if (match) {
            clearTimeout(timer);
            if (!token) rejectStart(new Error(`no API token printed:\n${lines.join("\n")}`));
            resolveStart({ grpcAddress: match[1], httpUrl: match[2], token, stop });
          }
        }
      });
    });
  } catch (error) {
    await stop();
    throw error;
  }
}
