"""How use cases report failure: the server/errors.py family (values naming a gRPC code), built in one place.

A domain RuleViolation becomes INVALID_ARGUMENT naming the same field
(DESIGN.md invariant 6); a row that is not the customer's, or not live, is
NOT_FOUND whichever it is (invariant 1).
"""

from __future__ import annotations

from typing import TypeVar

from convhub.server.domain.violations import RuleViolation
from convhub.server.errors import InvalidArgument, NotFound

R = TypeVar("R")


def invalid_argument(violation: RuleViolation) -> InvalidArgument:
    """INVALID_ARGUMENT naming the field the rule rejected."""
    return InvalidArgument(violation.field, violation.description)


def found(row: R | None, resource: str, item_id: str) -> R:
    """`row`, or NOT_FOUND for `resource` `item_id`."""
    if row is None:
        raise NotFound(resource, item_id)
    return row
