"""Tenancy and authentication: tokens resolve to one customer and are stored hashed."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from sqlalchemy import select

from convhub.server.store.models import ApiToken
from convhub.v1 import conversation_service_pb2 as cs
from convhub.v1 import conversation_service_pb2_grpc
from tests.conftest import Hub, Tenant
from tests.support import expect_error


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer chk_wrong"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer "),),
    ],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
def test_missing_or_wrong_token_is_unauthenticated(channel: grpc.Channel, metadata: tuple) -> None:
    stub = conversation_service_pb2_grpc.ConversationServiceStub(channel)
    err = expect_error(
        lambda r: stub.ListConversations(r, metadata=metadata, timeout=10),
        cs.ListConversationsRequest(),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert err.reason == "UNAUTHENTICATED"


def test_tokens_are_stored_only_as_hashes(hub: Hub, tenant: Tenant) -> None:
    table = ApiToken.__table__
    with hub.engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.customer_id == tenant.customer_id)).one()
    assert row.token_hash == hashlib.sha256(tenant.token.encode()).hexdigest()  # computed here, independently
    assert all(tenant.token not in str(value) for value in row)
