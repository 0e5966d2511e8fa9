// `npm test`: against a real convhub server (see server.mjs), regenerate the
// REST types from its OpenAPI document, compile, and run the node:test suites.
import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { generateRestTypes } from "./generate-rest.mjs";
import { withServer } from "./server.mjs";

const server = await withServer();
let failed = false;
try {
  if (server.httpUrl) await generateRestTypes(server.httpUrl);
  execFileSync("tsc", ["-p", "."], { stdio: "inherit" });
  const suites = readdirSync("dist/test").filter((f) => f.endsWith(".test.js")).map((f) => `dist/test/${f}`);
  execFileSync(process.execPath, ["--test", "--test-concurrency=1", ...suites], {
    stdio: "inherit",
    env: {
      ...process.env,
      CONVHUB_GRPC_ADDRESS: server.grpcAddress,
      CONVHUB_TOKEN: server.token,
      ...(server.httpUrl ? { CONVHUB_HTTP_URL: server.httpUrl } : {}),
    },
  });
} catch (error) {
  failed = true;
  if (error.status === undefined) console.error(error);
} finally {
  await server.stop();
}
process.exit(failed ? 1 : 0);
