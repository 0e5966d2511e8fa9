/** The gRPC client against a real convhub server: ingest, list pages, get, masked update, errors, streaming. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { Code, ConvhubError, createConvhubClient } from "../src/index.js";
import { ConversationSchema } from "../src/gen/convhub/v1/conversation_pb.js";
import { EventType, type Event } from "../src/gen/convhub/v1/event_pb.js";
import { grpcAddress, inboundSms, newPeerNumber, token } from "./support.js";

const hub = createConvhubClient({ address: grpcAddress, token, timeoutMs: 10_000 });

async function rejection(call: Promise<unknown>): Promise<ConvhubError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof ConvhubError, `not a ConvhubError: ${String(error)}`);
    assert.ok(error instanceof ConnectError);
    return error;
  }
  assert.fail("the call succeeded");
}

describe("IngestService", () => {
  test("an inbound message opens a room, and its retry with the same transaction id stores nothing", async () => {
    const peer = newPeerNumber();
    const transactionId = `SM-ts-${peer}`;
    const first = await hub.ingest.ingestMessage(inboundSms(peer, "Hi, is my order ready?", { transactionId }));
    assert.equal(first.conversationCreated, true);
    assert.equal(first.duplicate, false);
    assert.equal(first.conversation?.peer?.target, peer);
    assert.equal(first.message?.text, "Hi, is my order ready?");

    const retry = await hub.ingest.ingestMessage(inboundSms(peer, "Hi, is my order ready?", { transactionId }));
    assert.equal(retry.duplicate, true);
    assert.equal(retry.conversation?.id, first.conversation?.id);
    assert.equal(retry.message?.id, first.message?.id);
  });
});

describe("ConversationService", () => {
  test("ListConversations pages through every room exactly once", async () => {
    const created = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const result = await hub.ingest.ingestMessage(inboundSms(newPeerNumber(), `page test ${i}`));
      created.add(result.conversation!.id);
    }
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await hub.conversations.listConversations({ pageSize: 2, pageToken });
      assert.ok(page.result.length <= 2, `a page of ${page.result.length} with page_size 2`);
      seen.push(...page.result.map((c) => c.id));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "" && pages < 10_000);
    assert.equal(new Set(seen).size, seen.length, "a conversation appeared on two pages");
    for (const id of created) assert.ok(seen.includes(id), `conversation ${id} missing from the pages`);
    assert.ok(pages >= 3, `5 new rooms in pages of 2 take at least 3 pages, got ${pages}`);
  });

  test("GetConversation returns the room; UpdateConversation changes only the masked fields", async () => {
    const opened = await hub.ingest.ingestMessage(inboundSms(newPeerNumber(), "update me"));
    const id = opened.conversation!.id;
    const got = await hub.conversations.getConversation({ id });
    assert.equal(got.id, id);
    assert.equal(got.peer?.target, opened.conversation?.peer?.target);

    const updated = await hub.conversations.updateConversation({
      conversation: create(ConversationSchema, { id, name: "Alice", detail: "not in the mask", ownerType: "agent" }),
      updateMask: create(FieldMaskSchema, { paths: ["name", "owner_type"] }),
    });
    assert.equal(updated.name, "Alice");
    assert.equal(updated.ownerType, "agent");
    assert.equal(updated.detail, got.detail, "detail is not in the mask and must not change");
    const again = await hub.conversations.getConversation({ id });
    assert.equal(again.name, "Alice");
    assert.equal(again.detail, got.detail);
  });
});

describe("errors", () => {
  test("NOT_FOUND carries ErrorInfo: reason, domain and metadata", async () => {
    const missing = "00000000-0000-4000-8000-000000000001";
    const error = await rejection(hub.conversations.getConversation({ id: missing }));
    assert.equal(error.code, Code.NotFound);
    assert.equal(error.reason, "CONVERSATION_NOT_FOUND");
    assert.equal(error.domain, "convhub.v1");
    assert.equal(error.errorMetadata.id, missing);
  });

  test("INVALID_ARGUMENT carries a BadRequest naming the field", async () => {
    const error = await rejection(hub.ingest.ingestMessage(inboundSms("not a phone number", "hi")));
    assert.equal(error.code, Code.InvalidArgument);
    assert.deepEqual(
      error.fieldViolations.map((v) => v.field),
      ["peer.target"],
    );
    assert.ok(error.fieldViolations[0]!.description.length > 0);
  });

  test("a call without the token is UNAUTHENTICATED", async () => {
    const anonymous = createConvhubClient({ address: grpcAddress });
    const error = await rejection(anonymous.conversations.listConversations({}));
    assert.equal(error.code, Code.Unauthenticated);
    assert.equal(error.reason, "UNAUTHENTICATED");
  });

  test("a call's deadline ends it with DEADLINE_EXCEEDED", async () => {
    // A live subscription sends nothing until an event: a 300 ms deadline must end it.
    const started = Date.now();
    const error = await rejection(
      (async () => {
        for await (const _ of hub.events.subscribeEvents({ conversationId: crypto.randomUUID() }, { timeoutMs: 300 })) {
          // nothing arrives for a conversation that does not exist
        }
      })(),
    );
    assert.equal(error.code, Code.DeadlineExceeded);
    assert.equal(error.reason, "DEADLINE_EXCEEDED");
    assert.ok(Date.now() - started < 5_000);
  });
});

describe("EventService", () => {
  test("SubscribeEvents replays a conversation's events, then delivers new ones live", async () => {
    const peer = newPeerNumber();
    const opened = await hub.ingest.ingestMessage(inboundSms(peer, "first"));
    const conversationId = opened.conversation!.id;
    const abort = new AbortController();
    const seen: Event[] = [];
    let sentLive = false;
    try {
      for await (const batch of hub.events.subscribeEvents(
        { conversationId, afterSequence: 0n },
        { signal: abort.signal, timeoutMs: 15_000 },
      )) {
        seen.push(...batch.events);
        if (!sentLive && seen.some((e) => e.type === EventType.CONVERSATION_MESSAGE_CREATED)) {
          sentLive = true; // the replay reached the first message: now one more, live
          await hub.ingest.ingestMessage(inboundSms(peer, "second"));
        }
        const texts = seen.flatMap((e) => (e.resource.case === "message" ? [e.resource.value.text] : []));
        if (texts.includes("second")) break;
      }
    } finally {
      abort.abort();
    }
    const types = seen.map((e) => e.type);
    assert.ok(types.includes(EventType.CONVERSATION_CREATED), `types: ${types}`);
    const sequences = seen.map((e) => e.sequence);
    assert.deepEqual(sequences, [...sequences].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), "events out of order");
    assert.ok(seen.every((e) => e.resource.case !== "conversation" || e.resource.value.id === conversationId));
  });
});
