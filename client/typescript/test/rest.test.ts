/** The REST client generated from the served OpenAPI document, against the same server. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createConvhubRestClient } from "../src/index.js";
import { SELF_NUMBER, httpUrl, newPeerNumber, token } from "./support.js";

describe("REST (openapi-typescript + openapi-fetch)", { skip: httpUrl ? false : "CONVHUB_HTTP_URL is not set" }, () => {
  const rest = createConvhubRestClient({ baseUrl: httpUrl ?? "http://127.0.0.1:0", token });

  test("ingest creates a room; list and get find it", async () => {
    const peer = newPeerNumber();
    const ingested = await rest.POST("/v1.0/conversation_messages:ingest", {
      body: {
        channel: "message",
        self: { type: "tel", target: SELF_NUMBER },
        peer: { type: "tel", target: peer },
        text: "Hi over REST",
      },
    });
    assert.equal(ingested.response.status, 200, JSON.stringify(ingested.error));
    const conversation = ingested.data?.conversation;
    assert.ok(conversation?.id);
    assert.equal(conversation.peer?.target, peer);
    assert.equal(ingested.data?.conversation_created, true);

    const listed = await rest.GET("/v1.0/conversations", {
      params: { query: { page_size: 5, "peer.type": "tel", "peer.target": peer } },
    });
    assert.equal(listed.response.status, 200, JSON.stringify(listed.error));
    assert.deepEqual(
      listed.data?.result?.map((c) => c.id),
      [conversation.id],
    );

    const got = await rest.GET("/v1.0/conversations/{id}", { params: { path: { id: conversation.id } } });
    assert.equal(got.response.status, 200);
    assert.equal(got.data?.id, conversation.id);
    assert.equal(got.data?.type, "message");
  });

  test("PUT changes only the fields in the body", async () => {
    const ingested = await rest.POST("/v1.0/conversation_messages:ingest", {
      body: { channel: "message", self: { type: "tel", target: SELF_NUMBER }, peer: { type: "tel", target: newPeerNumber() }, text: "x" },
    });
    const id = ingested.data!.conversation!.id!;
    const updated = await rest.PUT("/v1.0/conversations/{id}", {
      params: { path: { id } },
      body: { name: "Bob", owner_type: "agent" },
    });
    assert.equal(updated.response.status, 200, JSON.stringify(updated.error));
    assert.equal(updated.data?.name, "Bob");
    assert.equal(updated.data?.owner_type, "agent");
  });

  test("errors follow the documented error schema", async () => {
    const missing = "00000000-0000-4000-8000-000000000002";
    const got = await rest.GET("/v1.0/conversations/{id}", { params: { path: { id: missing } } });
    assert.equal(got.response.status, 404);
    assert.equal(got.error?.error?.status, "NOT_FOUND");
    assert.equal(got.error?.error?.reason, "CONVERSATION_NOT_FOUND");
  });
});
