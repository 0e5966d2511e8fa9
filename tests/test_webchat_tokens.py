"""Visitor tokens and the per-visitor token bucket: the pure rules under the web chat routes."""

from __future__ import annotations

import pytest

from convhub.server.webchat import tokens
from convhub.server.webchat.rate_limit import TokenBuckets

CLAIMS = tokens.VisitorClaims("acc", "v1", "conv", expires_at=1_000)


def test_a_token_verifies_with_its_secret_until_it_expires() -> None:
    token = tokens.sign(CLAIMS, "secret-a")
    assert tokens.verify(token, "secret-a", now=999) == CLAIMS
    assert tokens.verify(token, "secret-a", now=1_000) == CLAIMS
    with pytest.raises(tokens.BadVisitorToken, match="expired"):
        tokens.verify(token, "secret-a", now=1_001)
    assert tokens.verify(token, "secret-a", now=1_500, grace=500) == CLAIMS  # a returning visitor's window
    with pytest.raises(tokens.BadVisitorToken, match="signature"):
        tokens.verify(token, "secret-b", now=0)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace("vt1.", "vt2.", 1),
        lambda t: t + "x",
        lambda t: t.rsplit(".", 1)[0],
        lambda t: "vt1.%%%." + t.rsplit(".", 1)[1],
        lambda t: "vt1." + "A" * 2000 + ".x",
        lambda t: "",
    ],
)
def test_a_mangled_token_is_refused(mangle: object) -> None:
    token = tokens.sign(CLAIMS, "secret-a")
    with pytest.raises(tokens.BadVisitorToken):
        tokens.verify(mangle(token), "secret-a", now=0)  # type: ignore[operator]


def test_claims_rewritten_under_the_same_mac_are_refused() -> None:
    token = tokens.sign(CLAIMS, "secret-a")
    other = tokens.sign(tokens.VisitorClaims("acc", "v1", "another", 1_000), "secret-a")
    forged = ".".join([*other.split(".")[:2], token.split(".")[2]])
    with pytest.raises(tokens.BadVisitorToken, match="signature"):
        tokens.verify(forged, "secret-a", now=0)


def test_the_bucket_allows_a_burst_then_the_rate_per_key() -> None:
    now = [0.0]
    buckets = TokenBuckets(burst=3, rate=2.0, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0  # another visitor has its own bucket
    now[0] = 0.5
    assert buckets.take("a") == 0
    assert buckets.take("a") > 0
    now[0] = 100.0  # idle visitors are forgotten once their bucket would be full again
    buckets.take("c")
    assert set(buckets._buckets) == {"c"}
