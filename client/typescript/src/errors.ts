/**
 * convhub's rich errors: the server sends a google.rpc.Status in the
 * `grpc-status-details-bin` trailer with an ErrorInfo (a machine-readable
 * `reason`, e.g. CONVERSATION_NOT_FOUND) and, for bad input, a BadRequest
 * naming each offending field (server/errors.py). Connect parses the
 * trailer; this decodes the two details once so callers branch on fields,
 * not on message text.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export { Code };

/** The canonical gRPC name of a code: Code.DeadlineExceeded -> "DEADLINE_EXCEEDED". */
export function statusName(code: Code): string {
  return (Code[code] ?? "Unknown").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** One bad field: `field` is the proto path (`peer.target`). */
export interface FieldViolation {
  field: string;
  description: string;
}

/**
 * A ConnectError with convhub's details decoded. It stays a ConnectError
 * (`instanceof ConnectError`, `code`, `rawMessage`, `metadata` all work).
 */
export class ConvhubError extends ConnectError {
  /** ErrorInfo.reason; the status code's name when the server sent none (e.g. a deadline). */
  readonly reason: string;
  /** ErrorInfo.domain (`convhub.v1` for the server's own errors). */
  readonly domain: string;
  /** ErrorInfo.metadata, e.g. `{resource: "conversation", id: "…"}` or `{field: "peer.target"}`. */
  readonly errorMetadata: Readonly<Record<string, string>>;
  readonly fieldViolations: readonly FieldViolation[];

  /** ConnectError's own check accepts any ConnectError; this one wants the prototype chain. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }

  constructor(error: ConnectError) {
    super(error.rawMessage, error.code, error.metadata, undefined, error.cause);
    // Keep the received details so findDetails() still works on this error.
    (this as { details: ConnectError["details"] }).details = error.details;
    const [info] = error.findDetails(ErrorInfoSchema);
    this.reason = info?.reason || statusName(error.code);
    this.domain = info?.domain ?? "";
    this.errorMetadata = { ...(info?.metadata ?? {}) };
    this.fieldViolations = error
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
  }
}

/** Any thrown value as a ConvhubError (non-Connect errors become Code.Unknown). */
export function toConvhubError(reason: unknown): ConvhubError {
  return reason instanceof ConvhubError ? reason : new ConvhubError(ConnectError.from(reason));
}

async function* rethrowingConvhubErrors<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (reason) {
    throw toConvhubError(reason);
  }
}

/**
 * `client` (from createClient) whose calls fail with ConvhubError: unary
 * calls, and streams mid-iteration. Wrapping the client rather than the
 * transport also catches what fails before the transport (a local deadline).
 */
export function withConvhubErrors<T extends object>(client: T): T {
  return new Proxy(client, {
    get(target, property, receiver) {
      const method: unknown = Reflect.get(target, property, receiver);
      if (typeof method !== "function") return method;
      return (...args: unknown[]) => {
        const result: unknown = method.apply(target, args);
        if (result instanceof Promise) return result.catch((reason: unknown) => Promise.reject(toConvhubError(reason)));
        if (result !== null && typeof result === "object" && Symbol.asyncIterator in result) {
          return rethrowingConvhubErrors(result as AsyncIterable<unknown>);
        }
        return result;
      };
    },
  });
}
