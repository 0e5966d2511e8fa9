"""A broken domain rule, as the error callers receive (DESIGN.md invariant 6)."""

from __future__ import annotations

from convhub.server.api.errors import InvalidArgument
from convhub.server.domain.violations import RuleViolation


def invalid_argument(violation: RuleViolation) -> InvalidArgument:
    """INVALID_ARGUMENT naming the field the rule rejected."""
    return InvalidArgument(violation.field, violation.description)
