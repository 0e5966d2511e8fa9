/** What every suite shares: the server under test (scripts/test.mjs sets the env) and fresh addresses. */
import { randomInt } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { AddressSchema, AddressType, ConversationType } from "../src/gen/convhub/v1/common_pb.js";
import { IngestMessageRequestSchema } from "../src/gen/convhub/v1/ingest_service_pb.js";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with \`npm test\``);
  return value;
}

export const grpcAddress = required("CONVHUB_GRPC_ADDRESS");
export const token = required("CONVHUB_TOKEN");
export const httpUrl = process.env.CONVHUB_HTTP_URL;

export const SELF_NUMBER = "+15559990000";

/** A phone number no earlier run used (the server may be a shared, long-running one). */
export function newPeerNumber(): string {
  return `+1555${String(randomInt(0, 10_000_000)).padStart(7, "0")}`;
}

export function tel(target: string) {
  return create(AddressSchema, { type: AddressType.TEL, target });
}

/** An inbound SMS from `peer` to SELF_NUMBER. */
export function inboundSms(peer: string, text: string, extra: { transactionId?: string } = {}) {
  return create(IngestMessageRequestSchema, {
    self: tel(SELF_NUMBER),
    peer: tel(peer),
    channel: ConversationType.MESSAGE,
    text,
    ...extra,
  });
}
