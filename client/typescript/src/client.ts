/**
 * The gRPC client: Connect-ES v2 service clients over connect-node's gRPC
 * transport, with what every convhub call needs and nothing else — the API
 * token as `authorization: Bearer <token>` (as the Python client sends it),
 * a default deadline for unary calls, and errors as ConvhubError with the
 * server's error details decoded (errors.ts).
 */
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AccountService } from "./gen/convhub/v1/account_service_pb.js";
import { ConversationService } from "./gen/convhub/v1/conversation_service_pb.js";
import { CustomerService } from "./gen/convhub/v1/customer_service_pb.js";
import { EventService } from "./gen/convhub/v1/event_service_pb.js";
import { IngestService } from "./gen/convhub/v1/ingest_service_pb.js";
import { WebhookService } from "./gen/convhub/v1/webhook_service_pb.js";
import { withConvhubErrors } from "./errors.js";

export const DEFAULT_ADDRESS = "127.0.0.1:50051";
export const DEFAULT_TIMEOUT_MS = 10_000;
export const USER_AGENT = "convhub-typescript-client/0.1";

export interface ConvhubClientOptions {
  /** `host:port` (plaintext HTTP/2) or a full `http(s)://host:port` URL. */
  address?: string;
  /** The customer's API token (`convhub customer create` prints one). */
  token?: string;
  /**
   * Deadline for each unary call, in ms (default 10 s); a call's own
   * `{timeoutMs}` wins. Server streams have none unless the call sets one,
   * so a subscription lives until it is aborted.
   */
  timeoutMs?: number;
  /** Interceptors run after the auth and error ones (e.g. logging). */
  interceptors?: Interceptor[];
}

/** One typed client per convhub service, sharing one HTTP/2 connection. */
export interface ConvhubClient {
  conversations: Client<typeof ConversationService>;
  ingest: Client<typeof IngestService>;
  events: Client<typeof EventService>;
  accounts: Client<typeof AccountService>;
  webhooks: Client<typeof WebhookService>;
  customers: Client<typeof CustomerService>;
  transport: Transport;
}

export function bearerToken(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

const userAgent: Interceptor = (next) => (req) => {
  req.header.set("user-agent", USER_AGENT);
  return next(req);
};

/** The transport's default deadline, for unary calls only: streams default to none. */
function unaryDeadline(transport: Transport, timeoutMs: number): Transport {
  return {
    unary: (method, signal, callTimeoutMs, ...rest) => transport.unary(method, signal, callTimeoutMs ?? timeoutMs, ...rest),
    stream: (method, signal, callTimeoutMs, ...rest) => transport.stream(method, signal, callTimeoutMs ?? 0, ...rest),
  };
}

export function createConvhubClient(options: ConvhubClientOptions = {}): ConvhubClient {
  const address = options.address ?? DEFAULT_ADDRESS;
  const baseUrl = /^https?:\/\//.test(address) ? address : `http://${address}`;
  const interceptors = [userAgent, ...(options.interceptors ?? [])];
  if (options.token) interceptors.unshift(bearerToken(options.token));
  const transport = unaryDeadline(
    createGrpcTransport({ baseUrl, interceptors }),
    options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
  );
  return {
    conversations: withConvhubErrors(createClient(ConversationService, transport)),
    ingest: withConvhubErrors(createClient(IngestService, transport)),
    events: withConvhubErrors(createClient(EventService, transport)),
    accounts: withConvhubErrors(createClient(AccountService, transport)),
    webhooks: withConvhubErrors(createClient(WebhookService, transport)),
    customers: withConvhubErrors(createClient(CustomerService, transport)),
    transport,
  };
}
