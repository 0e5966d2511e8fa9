"""A write that fails inside the database logs where it failed, never what the caller sent (issue 10, item 3)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from sqlalchemy import text

from convhub.v1 import account_pb2
from convhub.v1 import account_service_pb2 as acs
from tests.conftest import BACKENDS, Hub, create_database, dedicated_hub, new_tenant
from tests.support import Api, expect_error

# Refuse every new account and message, so the handlers hit an error they do not expect.
REFUSE_WRITES = {
    "sqlite": [
        f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        for table in ("accounts", "messages")
    ],
    # NOT VALID: existing rows stay; PostgreSQL's error DETAIL then quotes the whole failing row.
    "postgresql": [
        f"ALTER TABLE {table} ADD CONSTRAINT refuse_{table} CHECK (false) NOT VALID"
        for table in ("accounts", "messages")
    ],
}


@pytest.fixture(params=BACKENDS)
def refusing_hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    for url in create_database(request.param, tmp_path):
        with dedicated_hub(url, tmp_path) as hub:
            with hub.engine.begin() as conn:
                for statement in REFUSE_WRITES[request.param]:
                    conn.execute(text(statement))
            yield hub


def test_failed_writes_log_no_credentials_and_no_message_text(refusing_hub: Hub) -> None:
    hub = refusing_hub
    tenant = new_tenant(hub)
    marker = uuid.uuid4().hex
    api_key, message_text, peer = f"sk_live_{marker}", f"my private words {marker}", "+15557654321"
    account = account_pb2.Account(
        type=account_pb2.ACCOUNT_TYPE_SMS, name="main", credentials={"api_key": api_key, "auth_token": api_key}
    )
    with hub.channel() as channel:
        api = Api.for_tenant(channel, tenant.metadata)
        expect_error(api.accounts.CreateAccount, acs.CreateAccountRequest(account=account), grpc.StatusCode.INTERNAL)
        with pytest.raises(grpc.RpcError) as failed:
            api.sms(peer=peer, text=message_text)
        assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert hub.http_base is not None
    headers = {"authorization": f"Bearer {tenant.token}"}
    with httpx.Client(base_url=hub.http_base, headers=headers, timeout=10) as http:
        created = http.post(
            "/v1.0/conversation_accounts", json={"type": "sms", "name": "main", "credentials": {"api_key": api_key}}
        )
        ingested = http.post(
            "/v1.0/conversation_messages:ingest",
            json={
                "channel": "message",
                "self": {"type": "tel", "target": "+15559990000"},
                "peer": {"type": "tel", "target": peer},
                "text": message_text,
            },
        )
    assert (created.status_code, ingested.status_code) == (500, 500), (created.text, ingested.text)
    assert api_key not in created.text + ingested.text and message_text not in created.text + ingested.text

    hub.process.terminate()
    hub.process.wait(timeout=20)
    log = "\n".join(hub.output)
    # The failures were logged, with enough to find them: the statement, not its values.
    assert log.count("unexpected error in") >= 4, log
    assert "INSERT INTO accounts" in log and "INSERT INTO messages" in log, log
    for secret in (marker, peer):  # the peer is a phone number: personal data, kept out like the text
        assert secret not in log, f"{secret!r} leaked into the server log:\n{log}"


def test_unexpected_error_text_keeps_type_and_statement_but_not_messages() -> None:
    """The formatter on its own: a database error quoting its row comes out without the row."""
    from sqlalchemy.exc import IntegrityError

    from convhub.server.observability.error_log import describe_exception

    class FakeDriverError(Exception):
        sqlstate = "23514"

    try:
        try:
            raise FakeDriverError('violates check constraint\nDETAIL:  Failing row contains ({"api_key": "s3cr3t"})')
        except FakeDriverError as driver_error:
            raise IntegrityError("INSERT INTO accounts (id, credentials) VALUES (?, ?)", None, driver_error) from None
    except IntegrityError as exc:
        text_ = describe_exception(exc)
    assert "s3cr3t" not in text_ and "Failing row" not in text_
    assert "sqlalchemy.exc.IntegrityError" in text_ and "code 23514" in text_
    assert "statement: INSERT INTO accounts (id, credentials) VALUES (?, ?)" in text_
    assert "test_error_logs.py" in text_  # the stack is kept


@pytest.mark.parametrize("backend", BACKENDS)
def test_engines_keep_bound_values_out_of_error_text(backend: str, tmp_path: Path) -> None:
    from sqlalchemy.exc import DBAPIError

    from convhub.server.store.db import create_db_engine

    for url in create_database(backend, tmp_path):
        engine = create_db_engine(url, pool_size=1)
        try:
            with pytest.raises(DBAPIError) as failed, engine.begin() as conn:
                conn.execute(text("CREATE TABLE refusing (v TEXT CHECK (v = 'ok'))"))
                conn.execute(text("INSERT INTO refusing (v) VALUES (:v)"), {"v": "sk_live_hidden"})
            assert "sk_live_hidden" not in str(failed.value).split("DETAIL")[0]
            assert "parameters hidden" in str(failed.value)
        finally:
            engine.dispose()
