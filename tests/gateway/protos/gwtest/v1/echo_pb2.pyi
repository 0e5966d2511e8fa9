import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import wrappers_pb2 as _wrappers_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Color(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLOR_UNSPECIFIED: _ClassVar[Color]
    COLOR_RED: _ClassVar[Color]
    COLOR_DARK_BLUE: _ClassVar[Color]
COLOR_UNSPECIFIED: Color
COLOR_RED: Color
COLOR_DARK_BLUE: Color

class Inner(_message.Message):
    __slots__ = ("label", "color", "big", "tags")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    BIG_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    label: str
    color: Color
    big: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, label: _Optional[str] = ..., color: _Optional[_Union[Color, str]] = ..., big: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "shelf_name", "display_name", "color", "count", "big_count", "small", "active", "ratio", "weight", "blob", "inner", "inners", "colors", "labels", "by_number", "tm_create", "ttl", "metadata", "maybe", "nickname", "secrets", "any_value", "text_choice", "inner_choice", "big_list", "huge")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ByNumberEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: Inner
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[Inner, _Mapping]] = ...) -> None: ...
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SHELF_NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BIG_COUNT_FIELD_NUMBER: _ClassVar[int]
    SMALL_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    INNER_FIELD_NUMBER: _ClassVar[int]
    INNERS_FIELD_NUMBER: _ClassVar[int]
    COLORS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TM_CREATE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MAYBE_FIELD_NUMBER: _ClassVar[int]
    NICKNAME_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    ANY_VALUE_FIELD_NUMBER: _ClassVar[int]
    TEXT_CHOICE_FIELD_NUMBER: _ClassVar[int]
    INNER_CHOICE_FIELD_NUMBER: _ClassVar[int]
    BIG_LIST_FIELD_NUMBER: _ClassVar[int]
    HUGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    shelf_name: str
    display_name: str
    color: Color
    count: int
    big_count: int
    small: int
    active: bool
    ratio: float
    weight: float
    blob: bytes
    inner: Inner
    inners: _containers.RepeatedCompositeFieldContainer[Inner]
    colors: _containers.RepeatedScalarFieldContainer[Color]
    labels: _containers.ScalarMap[str, str]
    by_number: _containers.MessageMap[int, Inner]
    tm_create: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    metadata: _struct_pb2.Struct
    maybe: _wrappers_pb2.Int32Value
    nickname: str
    secrets: _containers.ScalarMap[str, str]
    any_value: _struct_pb2.Value
    text_choice: str
    inner_choice: Inner
    big_list: _containers.RepeatedScalarFieldContainer[int]
    huge: int
    def __init__(self, id: _Optional[str] = ..., shelf_name: _Optional[str] = ..., display_name: _Optional[str] = ..., color: _Optional[_Union[Color, str]] = ..., count: _Optional[int] = ..., big_count: _Optional[int] = ..., small: _Optional[int] = ..., active: _Optional[bool] = ..., ratio: _Optional[float] = ..., weight: _Optional[float] = ..., blob: _Optional[bytes] = ..., inner: _Optional[_Union[Inner, _Mapping]] = ..., inners: _Optional[_Iterable[_Union[Inner, _Mapping]]] = ..., colors: _Optional[_Iterable[_Union[Color, str]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., by_number: _Optional[_Mapping[int, Inner]] = ..., tm_create: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., maybe: _Optional[_Union[_wrappers_pb2.Int32Value, _Mapping]] = ..., nickname: _Optional[str] = ..., secrets: _Optional[_Mapping[str, str]] = ..., any_value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., text_choice: _Optional[str] = ..., inner_choice: _Optional[_Union[Inner, _Mapping]] = ..., big_list: _Optional[_Iterable[int]] = ..., huge: _Optional[int] = ...) -> None: ...

class GetItemRequest(_message.Message):
    __slots__ = ("id", "view")
    ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    id: str
    view: str
    def __init__(self, id: _Optional[str] = ..., view: _Optional[str] = ...) -> None: ...

class ListItemsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter", "ids", "numbers", "color", "colors", "include_deleted", "since", "min_ratio", "after", "fields", "limit", "maybe_name")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    COLORS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DELETED_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    MIN_RATIO_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAYBE_NAME_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: Inner
    ids: _containers.RepeatedScalarFieldContainer[str]
    numbers: _containers.RepeatedScalarFieldContainer[int]
    color: Color
    colors: _containers.RepeatedScalarFieldContainer[Color]
    include_deleted: bool
    since: int
    min_ratio: float
    after: _timestamp_pb2.Timestamp
    fields: _field_mask_pb2.FieldMask
    limit: _wrappers_pb2.Int32Value
    maybe_name: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[_Union[Inner, _Mapping]] = ..., ids: _Optional[_Iterable[str]] = ..., numbers: _Optional[_Iterable[int]] = ..., color: _Optional[_Union[Color, str]] = ..., colors: _Optional[_Iterable[_Union[Color, str]]] = ..., include_deleted: _Optional[bool] = ..., since: _Optional[int] = ..., min_ratio: _Optional[float] = ..., after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fields: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., limit: _Optional[_Union[_wrappers_pb2.Int32Value, _Mapping]] = ..., maybe_name: _Optional[str] = ...) -> None: ...

class ListItemsResponse(_message.Message):
    __slots__ = ("result", "next_page_token")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    result: _containers.RepeatedCompositeFieldContainer[Item]
    next_page_token: str
    def __init__(self, result: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ShelfRequest(_message.Message):
    __slots__ = ("name", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    note: str
    def __init__(self, name: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class Shelf(_message.Message):
    __slots__ = ("name", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    note: str
    def __init__(self, name: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class CreateItemRequest(_message.Message):
    __slots__ = ("shelf", "item", "request_id")
    SHELF_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    shelf: str
    item: Item
    request_id: str
    def __init__(self, shelf: _Optional[str] = ..., item: _Optional[_Union[Item, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateItemRequest(_message.Message):
    __slots__ = ("item", "update_mask")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    item: Item
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class EchoRequest(_message.Message):
    __slots__ = ("shelf", "item", "notes", "code")
    SHELF_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    shelf: str
    item: Item
    notes: _containers.RepeatedScalarFieldContainer[str]
    code: int
    def __init__(self, shelf: _Optional[str] = ..., item: _Optional[_Union[Item, _Mapping]] = ..., notes: _Optional[_Iterable[str]] = ..., code: _Optional[int] = ...) -> None: ...

class EchoResponse(_message.Message):
    __slots__ = ("request", "update_mask")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    request: EchoRequest
    update_mask: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request: _Optional[_Union[EchoRequest, _Mapping]] = ..., update_mask: _Optional[_Iterable[str]] = ...) -> None: ...

class FailRequest(_message.Message):
    __slots__ = ("code",)
    CODE_FIELD_NUMBER: _ClassVar[int]
    code: str
    def __init__(self, code: _Optional[str] = ...) -> None: ...

class SleepRequest(_message.Message):
    __slots__ = ("seconds",)
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    def __init__(self, seconds: _Optional[float] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("count", "fail_with", "interval")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FAIL_WITH_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    count: int
    fail_with: str
    interval: float
    def __init__(self, count: _Optional[int] = ..., fail_with: _Optional[str] = ..., interval: _Optional[float] = ...) -> None: ...

class Tick(_message.Message):
    __slots__ = ("n", "color")
    N_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    n: int
    color: Color
    def __init__(self, n: _Optional[int] = ..., color: _Optional[_Union[Color, str]] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
