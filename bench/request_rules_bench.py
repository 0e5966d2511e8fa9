"""Per-call cost of the checks every request passes before its handler (server/api/request_rules.py).

    python bench/request_rules_bench.py [--number 20000] [--repeat 7]

In-process timeit, no server: the rules' walk over typical requests, next to
what the same call costs anyway (decoding the request from its wire bytes) so
the number reads as a ratio. Best of `--repeat` runs, in microseconds per call.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from convhub.server.api.request_rules import check_request
from convhub.server.gateway import codec
from convhub.server.gateway.json_body import parse_json
from convhub.v1 import common_pb2
from convhub.v1 import conversation_service_pb2 as cs
from convhub.v1 import ingest_service_pb2 as ip

CONVERSATION_ID = "0b5fdb82-df9f-4520-ba74-102eaba7ce9f"


def requests() -> dict[str, object]:
    get = cs.GetConversationRequest(id=CONVERSATION_ID)
    ingest = ip.IngestMessageRequest(
        channel=common_pb2.CONVERSATION_TYPE_MESSAGE,
        self=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target="+15559990000"),
        peer=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target="+15550001111", target_name="Alice"),
        text="Hi, is my order ready?",
        transaction_id="SM123",
        request_id="3f1c9a",
    )
    ingest_unicode = ip.IngestMessageRequest()
    ingest_unicode.CopyFrom(ingest)
    ingest_unicode.text = "Grüße aus Köln 😀 — ist meine Bestellung fertig?"
    update = cs.UpdateConversationRequest(update_mask={"paths": ["metadata", "tags"]})
    update.conversation.id = CONVERSATION_ID
    update.conversation.metadata.update({"crm": {"id": 42, "tier": "gold", "tags": ["a", "b"]}, "score": 0.5})
    update.conversation.tags.extend(["vip", "de"])
    return {
        "GetConversation": get,
        "IngestMessage": ingest,
        "IngestMessage (non-ASCII)": ingest_unicode,
        "UpdateConversation (metadata)": update,
    }


def best(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{'request':32} {'rules µs':>9} {'decode µs':>10} {'ratio':>6}")
    for name, request in requests().items():
        check_request(request)  # compile the plan outside the timing
        wire = request.SerializeToString()  # type: ignore[attr-defined]
        cls = type(request)
        rules = best(lambda r=request: check_request(r), args.number, args.repeat)
        decode = best(lambda w=wire, c=cls: c.FromString(w), args.number, args.repeat)
        print(f"{name:32} {rules:9.2f} {decode:10.2f} {rules / decode:6.2f}")
    body = b'{"metadata": {"crm": {"id": 42, "tier": "gold"}}, "tags": ["vip"]}'
    json_us = best(lambda: parse_json(body), args.number, args.repeat)
    decode_us = best(
        lambda: codec.decode_into(cs.UpdateConversationRequest().conversation, parse_json(body)),
        args.number,
        args.repeat,
    )
    print(
        f"REST body: parse_json {json_us:.2f} µs (depth scan skipped: few brackets); parse + decode {decode_us:.2f} µs"
    )


if __name__ == "__main__":
    main()
