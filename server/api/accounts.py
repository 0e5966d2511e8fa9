"""AccountService: channel accounts. Credentials are accepted and stored, never returned."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from convhub.server.api import convert, pagination, validation
from convhub.server.api.base import Handlers, get_live, soft_delete
from convhub.server.api.dispatch import Caller, read_only
from convhub.server.api.errors import InvalidArgument
from convhub.server.domain.channels import address_type_for_account
from convhub.server.domain.updates import ACCOUNT_UPDATABLE
from convhub.server.events.outbox import append_events
from convhub.server.store import idempotency
from convhub.server.store.db import new_id, now_us, retry_on_conflict
from convhub.server.store.models import Account
from convhub.v1 import account_pb2, event_pb2
from convhub.v1 import account_service_pb2 as pb

accounts = Account.__table__
_list = pagination.Lister(accounts)


class AccountMethods(Handlers):
    def _address_values(self, account_type: str, account: account_pb2.Account) -> dict[str, str]:
        if not account.HasField("address"):
            return {"address_type": "", "address_target": "", "address_name": ""}
        t, target, name = validation.address(
            "account.address",
            account.address,
            expected_type=address_type_for_account(account_type),
            default_region=self.settings.default_region,
        )
        return {"address_type": t, "address_target": target, "address_name": name}

    @staticmethod
    def _credentials(values: Any) -> dict[str, str]:
        creds = dict(values)
        if len(creds) > validation.MAX_CREDENTIALS:
            raise InvalidArgument("account.credentials", f"at most {validation.MAX_CREDENTIALS} entries")
        for key, value in creds.items():
            if not key:
                raise InvalidArgument("account.credentials", "keys must not be empty")
            validation.max_length(f"account.credentials[{key[:64]}]", key, 64)
            validation.max_length(f"account.credentials[{key}]", value, validation.MAX_CREDENTIAL_VALUE)
        return creds

    @retry_on_conflict
    def CreateAccount(self, request: pb.CreateAccountRequest, caller: Caller) -> account_pb2.Account:
        if not request.HasField("account"):
            raise InvalidArgument("account", "is required")
        a = request.account
        account_type = validation.enum_name("account.type", convert.ACCOUNT_TYPE, a.type, required=True)
        assert account_type is not None
        values: dict[str, Any] = {
            "type": account_type,
            "name": validation.max_length("account.name", a.name, validation.MAX_NAME),
            "detail": validation.max_length("account.detail", a.detail, validation.MAX_DETAIL),
            "credentials": self._credentials(a.credentials),
            **self._address_values(account_type, a),
        }
        request_id = validation.request_id(request.request_id)
        with self.engine.begin() as conn:
            if request_id:
                existing = idempotency.lookup(conn, caller.customer_id, "CreateAccount", request_id)
                if existing:
                    return convert.account(conn.execute(select(accounts).where(accounts.c.id == existing)).one())
            now = now_us()
            account_id = new_id()
            conn.execute(
                insert(accounts).values(
                    id=account_id, customer_id=caller.customer_id, tm_create=now, tm_update=now, **values
                )
            )
            if request_id:
                idempotency.record(conn, caller.customer_id, "CreateAccount", request_id, account_id)
            result = convert.account(conn.execute(select(accounts).where(accounts.c.id == account_id)).one())
            append_events(conn, caller.customer_id, [(event_pb2.EVENT_TYPE_ACCOUNT_CREATED, result)])
        return result

    @read_only
    def ListAccounts(self, request: pb.ListAccountsRequest, caller: Caller) -> pb.ListAccountsResponse:
        page = pagination.parse(request.page_size, request.page_token, "accounts")
        with self.db.read() as conn:
            rows, token = _list.fetch(conn, page, caller.customer_id)
        return pb.ListAccountsResponse(result=[convert.account(r) for r in rows], next_page_token=token)

    @read_only
    def GetAccount(self, request: pb.GetAccountRequest, caller: Caller) -> account_pb2.Account:
        account_id = validation.require_uuid("id", request.id)
        with self.db.read() as conn:
            return convert.account(get_live(conn, accounts, "account", caller.customer_id, account_id))

    def UpdateAccount(self, request: pb.UpdateAccountRequest, caller: Caller) -> account_pb2.Account:
        if not request.HasField("account"):
            raise InvalidArgument("account", "is required")
        a = request.account
        account_id = validation.require_uuid("account.id", a.id)
        fields = validation.update_fields(request.update_mask, a, ACCOUNT_UPDATABLE)
        with self.engine.begin() as conn:
            row = get_live(conn, accounts, "account", caller.customer_id, account_id)
            values: dict[str, Any] = {}
            if "name" in fields:
                values["name"] = validation.max_length("account.name", a.name, validation.MAX_NAME)
            if "detail" in fields:
                values["detail"] = validation.max_length("account.detail", a.detail, validation.MAX_DETAIL)
            if "address" in fields:
                values.update(self._address_values(row.type, a))
            if "credentials" in fields:
                values["credentials"] = self._credentials(a.credentials)
            if values:
                values["tm_update"] = now_us()
                conn.execute(update(accounts).where(accounts.c.id == account_id).values(values))
            result = convert.account(conn.execute(select(accounts).where(accounts.c.id == account_id)).one())
            if values:
                append_events(conn, caller.customer_id, [(event_pb2.EVENT_TYPE_ACCOUNT_UPDATED, result)])
        return result

    def DeleteAccount(self, request: pb.DeleteAccountRequest, caller: Caller) -> account_pb2.Account:
        account_id = validation.require_uuid("id", request.id)
        with self.engine.begin() as conn:
            result = convert.account(soft_delete(conn, accounts, "account", caller.customer_id, account_id))
            append_events(conn, caller.customer_id, [(event_pb2.EVENT_TYPE_ACCOUNT_DELETED, result)])
        return result
