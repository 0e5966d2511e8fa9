"""VoIPBIN's names and spellings on the REST wire; the gRPC contract keeps its AIP names.

A client written for VoIPBIN reads and writes keys convhub's contract spells
differently. The codec (`codec.py`) and the OpenAPI document (`openapi.py`)
both read these tables, so what the server accepts and what it documents
agree:

* input aliases: a VoIPBIN key that fills a contract field (an account's
  write-only `provider_data` object joins its write-only `credentials`);
* output aliases: a VoIPBIN key repeating a field's value (a message's
  `reference_type` is its `channel`);
* output constants: a VoIPBIN key convhub has no value for, sent as VoIPBIN's
  "none" (`reference_id`: convhub keeps no separate referenced resource);
* unset times are `null` and unset ids the nil UUID, as VoIPBIN's typed
  clients expect; the nil UUID on input means "none" too.
"""

from __future__ import annotations

NIL_UUID = "00000000-0000-0000-0000-000000000000"

# message full name -> {VoIPBIN input key: the contract field it fills}
INPUT_ALIASES: dict[str, dict[str, str]] = {
    "convhub.v1.Account": {"provider_data": "credentials"},
}
# message full name -> ((VoIPBIN output key, the contract field whose value it repeats), ...)
OUTPUT_ALIASES: dict[str, tuple[tuple[str, str], ...]] = {
    "convhub.v1.Message": (("reference_type", "channel"),),
}
# message full name -> ((VoIPBIN output key, the constant it always carries), ...)
OUTPUT_CONSTANTS: dict[str, tuple[tuple[str, str], ...]] = {
    "convhub.v1.Message": (("reference_id", NIL_UUID),),
}
# Unset, these are written as null rather than left out.
NULL_WHEN_UNSET = frozenset({"tm_delete"})
# Empty, these string ids are written as the nil UUID; the nil UUID on input is "".
NIL_UUID_WHEN_EMPTY = frozenset({"account_id", "owner_id", "reference_id", "message_flow_id"})
