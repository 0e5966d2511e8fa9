// Regenerate src/rest/openapi.ts from the OpenAPI document a real server
// serves (GET /v1.0/openapi.json) with openapi-typescript.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const OPENAPI_PATH = "/v1.0/openapi.json";
export const OUTPUT = "src/rest/openapi.ts";

export async function generateRestTypes(httpUrl) {
  const response = await fetch(new URL(OPENAPI_PATH, httpUrl));
  if (!response.ok) throw new Error(`GET ${OPENAPI_PATH}: ${response.status}`);
  const dir = mkdtempSync(join(tmpdir(), "convhub-openapi-"));
  try {
    const doc = join(dir, "openapi.json");
    writeFileSync(doc, await response.text());
    execFileSync("openapi-typescript", [doc, "--output", OUTPUT], { stdio: ["ignore", "ignore", "inherit"] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { withServer } = await import("./server.mjs");
  const server = await withServer();
  try {
    if (!server.httpUrl) throw new Error("no REST address: set CONVHUB_HTTP_URL");
    await generateRestTypes(server.httpUrl);
  } finally {
    await server.stop();
  }
}
