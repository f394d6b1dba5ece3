"""The OAuth2 token reply shared by the CrowdStrike, Defender and Mimecast clients."""

import pytest
import trio

from ctd.adapters.http import bearer_token
from ctd.model import UpstreamDataError


async def test_token_and_renewal_time_from_the_reply():
    """The token is renewed `margin` seconds before `expires_in` runs out; without a usable one, after the default."""
    now = trio.current_time()
    token, renew = bearer_token({"access_token": "t", "expires_in": 600}, "login", default_ttl=1800, margin=60)
    assert token == "t" and renew == pytest.approx(now + 540, abs=1)
    _, renew = bearer_token({"access_token": "t", "expires_in": "soon"}, "login", default_ttl=1800, margin=60)
    assert renew == pytest.approx(now + 1740, abs=1)
    _, renew = bearer_token({"access_token": "t", "expires_in": 10}, "login", default_ttl=1800, margin=60)
    assert renew == pytest.approx(now, abs=1)  # shorter than the margin: renewed at once


@pytest.mark.parametrize("body", [{}, {"access_token": ""}, {"access_token": 5}, ["access_token"], None])
async def test_a_reply_without_a_token_is_bad_data(body):
    """A reply holding no token string is an upstream data error naming the call."""
    with pytest.raises(UpstreamDataError, match="login: no access_token"):
        bearer_token(body, "login", default_ttl=1800, margin=60)
