"""Channel tests: a `convhub serve` per backend whose Twilio is a loopback stand-in (tests/channel_rig.py)."""

from tests.channel_rig import chub, rig, standin  # noqa: F401 (fixtures for every test here)
