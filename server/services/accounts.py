"""Channel accounts: create, read, update, delete. Credentials go in and never come out (invariant 5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from convhub.server.config import Settings
from convhub.server.domain.addresses import Address, normalize_address
from convhub.server.domain.channels import account_provider, address_type_for_account, voipbin_credentials
from convhub.server.domain.violations import RuleViolation
from convhub.server.errors import InvalidArgument
from convhub.server.events.outbox import append_events
from convhub.server.services import resources
from convhub.server.services.errors import found, invalid_argument
from convhub.server.store import accounts, idempotency
from convhub.server.store.db import Database, new_id, now_us, retry_on_conflict
from convhub.server.store.pages import Page
from convhub.server.webchat import keys as webchat_keys
from convhub.v1 import account_pb2, event_pb2

IDEMPOTENCY_METHOD = "CreateAccount"  # the request-id namespace (stored: do not rename)


@dataclass(frozen=True)
class NewAccount:
    customer_id: str
    type: str  # stored name: sms, line, email, webchat
    name: str = ""
    detail: str = ""
    address: Address | None = None  # normalised here for the account's channel
    credentials: Mapping[str, str] = field(default_factory=dict)
    message_flow_id: str = ""
    request_id: str | None = None
    provider: str = ""  # "" takes the type's default (twilio for sms, line for line)
    enabled: bool = True
    inactivity_timeout_s: int = 0
    secret: str = ""  # VoIPBIN's fields, mapped onto the provider's credential keys
    token: str = ""


@dataclass(frozen=True)
class AccountPatch:
    """An update (AIP-134): only `fields` are written; an absent `address` among them clears it."""

    customer_id: str
    account_id: str
    fields: frozenset[str]
    name: str = ""
    detail: str = ""
    address: Address | None = None
    credentials: Mapping[str, str] = field(default_factory=dict)
    message_flow_id: str = ""
    enabled: bool = True
    inactivity_timeout_s: int = 0
    secret: str = ""  # set with `secret` / `token` in fields: merged into the stored credentials
    token: str = ""


def _with_voipbin_credentials(provider: str, credentials: Mapping[str, str], secret: str, token: str) -> dict[str, str]:
    """`credentials` plus VoIPBIN's `secret` / `token` under the provider's keys; a key given twice must agree."""
    try:
        mapped = voipbin_credentials(provider, secret, token) if (secret or token) else {}
    except ValueError as exc:
        raise InvalidArgument("account.secret" if secret else "account.token", str(exc)) from None
    merged = dict(credentials)
    for key, value in mapped.items():
        if merged.get(key, value) != value:
            field_name = "account.secret" if value == secret else "account.token"
            raise InvalidArgument(field_name, f"disagrees with account.credentials[{key}]")
        merged[key] = value
    return merged


class AccountService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def _address_values(self, account_type: str, address: Address | None) -> dict[str, str]:
        if address is None:
            return {"address_type": "", "address_target": "", "address_name": ""}
        try:
            normal = normalize_address(
                "account.address",
                address,
                expected_type=address_type_for_account(account_type),
                default_region=self.settings.default_region,
            )
        except RuleViolation as exc:
            raise invalid_argument(exc) from None
        return {"address_type": normal.type, "address_target": normal.target, "address_name": normal.name}

    @retry_on_conflict
    def create(self, new: NewAccount) -> account_pb2.Account:
        try:
            provider = account_provider(new.type, new.provider)
        except ValueError as exc:
            raise InvalidArgument("account.provider", str(exc)) from None
        credentials = _with_voipbin_credentials(provider, new.credentials, new.secret, new.token)
        webchat = new.type == "webchat"
        if webchat:  # a public widget key, and the signing secret behind visitor tokens (webchat/keys.py)
            credentials = webchat_keys.with_signing_secret(credentials)
        values: dict[str, Any] = {
            "type": new.type,
            "name": new.name,
            "detail": new.detail,
            "message_flow_id": new.message_flow_id,
            "credentials": self.db.secrets.seal(credentials),  # sealed at rest (store/secrets.py)
            "provider": provider,
            "enabled": new.enabled,
            "inactivity_timeout_s": new.inactivity_timeout_s,
            **self._address_values(new.type, new.address),
        }
        with self.db.writer.begin() as conn:
            if new.request_id:
                existing = idempotency.lookup(conn, new.customer_id, IDEMPOTENCY_METHOD, new.request_id)
                if existing:
                    return resources.account(accounts.live.by_id(conn, existing))
            now = now_us()
            account_id = new_id()
            if webchat:
                values["widget_key"] = webchat_keys.new_widget_key()
                if not values["address_target"]:
                    values.update(self._address_values(new.type, webchat_keys.default_address(account_id)))
            accounts.insert_account(
                conn, {"id": account_id, "customer_id": new.customer_id, "tm_create": now, "tm_update": now, **values}
            )
            if new.request_id:
                idempotency.record(conn, new.customer_id, IDEMPOTENCY_METHOD, new.request_id, account_id)
            result = resources.account(accounts.live.by_id(conn, account_id))
            append_events(conn, new.customer_id, [(event_pb2.EVENT_TYPE_ACCOUNT_CREATED, result)])
        return result

    def list(self, customer_id: str, page: Page) -> tuple[list[account_pb2.Account], str]:
        with self.db.read() as conn:
            rows, token = accounts.live.page(conn, page, customer_id)
        return [resources.account(r) for r in rows], token

    def get(self, customer_id: str, account_id: str) -> account_pb2.Account:
        with self.db.read() as conn:
            row = accounts.live.get(conn, customer_id, account_id)
        return resources.account(found(row, "account", account_id))

    def update(self, patch: AccountPatch) -> account_pb2.Account:
        with self.db.writer.begin() as conn:
            row = found(accounts.live.get(conn, patch.customer_id, patch.account_id), "account", patch.account_id)
            values: dict[str, Any] = {}
            if "name" in patch.fields:
                values["name"] = patch.name
            if "detail" in patch.fields:
                values["detail"] = patch.detail
            if "message_flow_id" in patch.fields:
                values["message_flow_id"] = patch.message_flow_id
            if "address" in patch.fields:
                values.update(self._address_values(row.type, patch.address))
            if "credentials" in patch.fields:
                values["credentials"] = dict(patch.credentials)
            if "secret" in patch.fields or "token" in patch.fields:
                given = values.get("credentials", {})
                voipbin = _with_voipbin_credentials(row.provider, given, patch.secret, patch.token)
                # Without a new credentials map, VoIPBIN's fields change only their own keys.
                base = {} if "credentials" in values else self.db.secrets.open_mapping(row.credentials)
                values["credentials"] = {**base, **voipbin}
            if "credentials" in values and row.type == "webchat":
                # Replacing a web chat account's credentials keeps its signing secret unless a new one is given:
                # otherwise every visitor token in the wild would stop verifying.
                kept = self.db.secrets.open_mapping(row.credentials).get(webchat_keys.SIGNING_SECRET, "")
                values["credentials"] = webchat_keys.with_signing_secret(
                    {webchat_keys.SIGNING_SECRET: kept, **{k: v for k, v in values["credentials"].items() if v}}
                )
            if "credentials" in values:
                values["credentials"] = self.db.secrets.seal(values["credentials"])  # sealed at rest
            if "enabled" in patch.fields:
                values["enabled"] = patch.enabled
            if "inactivity_timeout_seconds" in patch.fields:
                values["inactivity_timeout_s"] = patch.inactivity_timeout_s
            if values:
                values["tm_update"] = now_us()
                accounts.update_account(conn, patch.account_id, values)
            result = resources.account(accounts.live.by_id(conn, patch.account_id))
            if values:
                append_events(conn, patch.customer_id, [(event_pb2.EVENT_TYPE_ACCOUNT_UPDATED, result)])
        return result

    def delete(self, customer_id: str, account_id: str) -> account_pb2.Account:
        with self.db.writer.begin() as conn:
            row = found(accounts.live.soft_delete(conn, customer_id, account_id), "account", account_id)
            result = resources.account(row)
            append_events(conn, customer_id, [(event_pb2.EVENT_TYPE_ACCOUNT_DELETED, result)])
        return result
