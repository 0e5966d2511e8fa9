"""Use cases: one transaction each (outbox events included), taking plain typed commands.

Transports (gRPC/REST handlers in api/, and provider hooks) translate their
input into a command dataclass and call a service here; services apply the
pure rules of domain/ and the queries of store/, and return the contract's
resource messages (convhub.v1 Conversation, Message, Participant, Account).
Errors are the server/errors.py family (values naming a gRPC code); a domain
RuleViolation becomes INVALID_ARGUMENT naming the same field.
"""
