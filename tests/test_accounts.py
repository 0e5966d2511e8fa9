"""Accounts: CRUD, write-only credentials (invariant 5), request ids, ingest through an account."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import select

from convhub.server.store.models import Event
from convhub.v1 import account_pb2, common_pb2, event_pb2
from convhub.v1 import account_service_pb2 as acs
from convhub.v1 import ingest_service_pb2 as ip
from tests.conftest import Hub, Tenant
from tests.support import TEL, Api, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SECRET = "sk_live_very_secret_value"


@pytest.fixture
def api(channel: grpc.Channel, tenant: Tenant) -> Api:
    return Api.for_tenant(channel, tenant.metadata)


def sms_account(api: Api, **fields: object) -> account_pb2.Account:
    account = account_pb2.Account(
        type=account_pb2.ACCOUNT_TYPE_SMS,
        name="twilio main",
        address=common_pb2.Address(target="+1 555 999 0000"),
        credentials={"account_sid": "AC123", "auth_token": SECRET},
    )
    return api.accounts.CreateAccount(acs.CreateAccountRequest(account=account, **fields))


def test_create_get_list_update_delete(api: Api) -> None:
    created = sms_account(api)
    assert created.id and created.type == account_pb2.ACCOUNT_TYPE_SMS
    assert created.address.target == "+15559990000" and created.address.type == common_pb2.ADDRESS_TYPE_TEL
    assert api.accounts.GetAccount(acs.GetAccountRequest(id=created.id)) == created
    assert [a.id for a in api.accounts.ListAccounts(acs.ListAccountsRequest()).result] == [created.id]
    patch = account_pb2.Account(id=created.id, name="renamed", detail="ignored")
    updated = api.accounts.UpdateAccount(
        acs.UpdateAccountRequest(account=patch, update_mask=field_mask_pb2.FieldMask(paths=["name"]))
    )
    assert (updated.name, updated.detail) == ("renamed", "")
    api.accounts.DeleteAccount(acs.DeleteAccountRequest(id=created.id))
    assert list(api.accounts.ListAccounts(acs.ListAccountsRequest()).result) == []
    expect_error(api.accounts.GetAccount, acs.GetAccountRequest(id=created.id), grpc.StatusCode.NOT_FOUND)


def test_credentials_are_never_returned_by_reads_lists_or_events(hub: Hub, tenant: Tenant, api: Api) -> None:
    created = sms_account(api)
    patch = account_pb2.Account(id=created.id, credentials={"auth_token": SECRET + "2"})
    updated = api.accounts.UpdateAccount(acs.UpdateAccountRequest(account=patch))
    reads = [
        created,
        updated,
        api.accounts.GetAccount(acs.GetAccountRequest(id=created.id)),
        *api.accounts.ListAccounts(acs.ListAccountsRequest()).result,
        api.accounts.DeleteAccount(acs.DeleteAccountRequest(id=created.id)),
    ]
    assert all(not a.credentials for a in reads)
    table = Event.__table__
    with hub.engine.connect() as conn:
        payloads = (
            conn.execute(select(table.c.payload).where(table.c.customer_id == tenant.customer_id)).scalars().all()
        )
    assert len(payloads) == 3
    for payload in payloads:
        assert SECRET.encode() not in payload
        assert not event_pb2.Event.FromString(payload).account.credentials


def test_create_with_a_repeated_request_id_returns_the_first_account(api: Api) -> None:
    first = sms_account(api, request_id="acct-1")
    again = sms_account(api, request_id="acct-1")
    assert again == first
    assert len(api.accounts.ListAccounts(acs.ListAccountsRequest()).result) == 1


@pytest.mark.parametrize(
    ("account", "field"),
    [
        (account_pb2.Account(name="no type"), "account.type"),
        (account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_SMS, name="x" * 300), "account.name"),
        (
            account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_SMS, address=common_pb2.Address(target="abc")),
            "account.address.target",
        ),
        (
            account_pb2.Account(
                type=account_pb2.ACCOUNT_TYPE_LINE,
                address=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_EMAIL, target="a@b.example"),
            ),
            "account.address.type",
        ),
    ],
)
def test_bad_accounts_are_invalid_and_not_created(api: Api, account: account_pb2.Account, field: str) -> None:
    expect_error(api.accounts.CreateAccount, acs.CreateAccountRequest(account=account), INVALID, field)
    assert list(api.accounts.ListAccounts(acs.ListAccountsRequest()).result) == []


def test_type_is_immutable(api: Api) -> None:
    created = sms_account(api)
    patch = account_pb2.Account(id=created.id, type=account_pb2.ACCOUNT_TYPE_LINE)
    request = acs.UpdateAccountRequest(account=patch, update_mask=field_mask_pb2.FieldMask(paths=["type"]))
    expect_error(api.accounts.UpdateAccount, request, INVALID, "update_mask")


def test_ingest_through_an_account_uses_its_channel_and_address(api: Api) -> None:
    account = sms_account(api)
    response = api.ingest.IngestMessage(
        ip.IngestMessageRequest(
            account_id=account.id,
            peer=common_pb2.Address(type=TEL, target="+15550001111"),
            text="hi",
            transaction_id="SM9",
        )
    )
    conv = response.conversation
    assert conv.account_id == account.id and conv.type == common_pb2.CONVERSATION_TYPE_MESSAGE
    assert conv.self.target == "+15559990000"
    # the same provider id through the same account is a duplicate, whatever self address is named
    again = api.ingest.IngestMessage(
        ip.IngestMessageRequest(
            account_id=account.id,
            peer=common_pb2.Address(type=TEL, target="+15550001111"),
            text="hi",
            transaction_id="SM9",
        )
    )
    assert again.duplicate and again.message.id == response.message.id


def test_ingest_on_a_channel_the_account_does_not_carry_is_invalid(api: Api) -> None:
    account = sms_account(api)
    request = ip.IngestMessageRequest(
        account_id=account.id,
        channel=common_pb2.CONVERSATION_TYPE_LINE,
        peer=common_pb2.Address(target="U1234"),
        text="hi",
    )
    expect_error(api.ingest.IngestMessage, request, INVALID, "channel")
