"""Server reflection answers under grpc.reflection.v1 as well as v1alpha (grpcurl and buf curl ask for v1 first)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.conftest import Hub, Tenant

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
SERVICES = {"convhub.v1.ConversationService", "convhub.v1.IngestService", "convhub.v1.EventService"}


def reflect(
    channel: grpc.Channel, method: str, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    """One reflection stream on `method`; v1 and v1alpha messages are the same on the wire (field numbers)."""
    call = channel.stream_stream(
        method,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=5))


def files_for_symbol(channel: grpc.Channel, method: str, symbol: str) -> list[descriptor_pb2.FileDescriptorProto]:
    [response] = reflect(channel, method, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]


@pytest.fixture(scope="module")
def reflection_channel(hub: Hub) -> Iterator[grpc.Channel]:
    with hub.channel() as channel:
        yield channel


@pytest.mark.parametrize("method", [V1_METHOD, V1ALPHA_METHOD])
def test_both_reflection_versions_list_every_service(reflection_channel: grpc.Channel, method: str) -> None:
    [response] = reflect(reflection_channel, method, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in response.list_services_response.service}
    reflection_services = {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
    assert SERVICES | reflection_services | {"grpc.health.v1.Health"} <= names


def test_reflection_v1_describes_the_contract_with_its_file_options(reflection_channel: grpc.Channel) -> None:
    files = {f.name: f for f in files_for_symbol(reflection_channel, V1_METHOD, "convhub.v1.ConversationService")}
    service_file = files["convhub/v1/conversation_service.proto"]
    assert [m.name for m in service_file.service[0].method][:2] == ["ListConversations", "GetConversation"]
    assert service_file.options.go_package.endswith(";convhubv1")


def test_reflection_v1_describes_itself_in_the_v1_package(reflection_channel: grpc.Channel) -> None:
    [file] = files_for_symbol(reflection_channel, V1_METHOD, "grpc.reflection.v1.ServerReflection")
    assert file.name == "grpc/reflection/v1/reflection.proto"
    assert file.package == "grpc.reflection.v1"
    [method] = file.service[0].method
    assert (method.input_type, method.output_type) == (
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )
    assert not any("v1alpha" in f.type_name for m in file.message_type for f in m.field)


@pytest.mark.skipif(shutil.which("buf") is None, reason="buf is in the dev extra")
def test_buf_curl_calls_the_api_through_reflection_v1_only(hub: Hub, tenant: Tenant) -> None:
    """What the issue tried: `buf curl --reflect-protocol grpc-v1` (no fallback to v1alpha)."""
    result = subprocess.run(
        [
            "buf",
            "curl",
            "--reflect-protocol",
            "grpc-v1",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "-H",
            f"authorization: Bearer {tenant.token}",
            "--data",
            '{"page_size": 1}',
            f"http://{hub.grpc_target}/convhub.v1.ConversationService/ListConversations",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout or "{}") == {}  # a new tenant has no conversations: an empty page
