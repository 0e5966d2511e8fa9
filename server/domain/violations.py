"""The one error pure rules raise: a rule rejected one field of a command.

Domain code does no I/O and knows no transport, so it cannot raise a gRPC
status; services turn a RuleViolation into INVALID_ARGUMENT naming the same
field (DESIGN.md invariant 6). Field paths use the contract's field names
(`self.target`), so a provider hook and an API call name the same thing.
"""

from __future__ import annotations


class RuleViolation(ValueError):
    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description
