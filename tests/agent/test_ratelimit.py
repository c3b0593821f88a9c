"""Neutron's two-window rate limit as the agent enforces it, on a fake clock (``now``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cloudmeta.agent.ratelimit import RateLimiter
from cloudmeta.agent.service import _limiter
from cloudmeta.config import Config, ProxyMode

NET = "net-a"


def _run(limiter: RateLimiter, times: list[float], ip: str = "192.0.2.10") -> list[float]:
    return [limiter.allow(NET, ip, t) for t in times]


def test_base_window_admits_its_limit_then_refuses_until_the_oldest_leaves() -> None:
    limiter = RateLimiter(base_window=10, base_limit=3, burst_window=1, burst_limit=100)
    waits = _run(limiter, [0.0, 1.0, 2.0, 3.0])
    assert waits[:3] == [0.0, 0.0, 0.0]
    # The 4th in 10 s: back once the request of t=1 has left (the one of t=0 already has,
    # the refused one of t=3 still counts): 1 + 10 - 3 = 8 s.
    assert waits[3] == pytest.approx(8.0)
    assert limiter.retry_after(waits[3]) == "8"
    assert limiter.allow(NET, "192.0.2.10", 10.5) > 0  # t=1, 2, 3 still in (0.5, 10.5]
    assert limiter.allow(NET, "192.0.2.10", 13.0) == 0.0  # only t=10.5 is left


def test_burst_window_refuses_a_burst_the_base_window_allows() -> None:
    limiter = RateLimiter(base_window=60, base_limit=10, burst_window=5, burst_limit=2)
    assert _run(limiter, [0.0, 0.1]) == [0.0, 0.0]
    wait = limiter.allow(NET, "192.0.2.10", 0.2)
    assert wait == pytest.approx(4.9)  # the request of t=0.1 leaves the burst window at 5.1
    assert limiter.allow(NET, "192.0.2.10", 5.3) == 0.0  # only t=0.2 in (0.3, 5.3]
    # One request every 6 s stays under the burst limit: the base window's 10 a minute binds
    # (the 4 above, refused one included, and 6 more).
    times = [11.0, 17.0, 23.0, 29.0, 35.0, 41.0, 47.0]
    assert [t for t, wait in zip(times, _run(limiter, times), strict=True) if wait] == [47.0]


def test_exactly_the_limit_is_admitted_and_refused_requests_count() -> None:
    """Neutron's rule is ``rate gt limit`` with the current request tracked first."""
    limiter = RateLimiter(base_window=10, base_limit=2, burst_window=10, burst_limit=2)
    assert _run(limiter, [0.0, 0.0, 0.0]) == [0.0, 0.0, pytest.approx(10.0)]
    # A caller that keeps asking (against Retry-After) stays refused: each try counts. At
    # 10.5 the admitted requests of t=0 have left, the refused ones of 9 and 9.5 have not.
    assert all(_run(limiter, [9.0, 9.5, 10.5]))
    assert limiter.allow(NET, "192.0.2.10", 20.0) == 0.0  # (10, 20] holds 10.5 and itself


def test_per_source_address_and_per_network() -> None:
    limiter = RateLimiter(base_window=10, base_limit=1, burst_window=1, burst_limit=1)
    assert limiter.allow(NET, "192.0.2.10", 0.0) == 0.0
    assert limiter.allow(NET, "192.0.2.10", 0.0) > 0
    assert limiter.allow(NET, "192.0.2.11", 0.0) == 0.0  # another caller
    assert limiter.allow("net-b", "192.0.2.10", 0.0) == 0.0  # same address, other network


@pytest.mark.parametrize(
    ("versions", "v4_limited", "v6_limited"),
    [((4,), True, False), ((6,), False, True), ((4, 6), True, True)],
)
def test_ip_versions_choose_the_callers_limited(
    versions: tuple[int, ...], v4_limited: bool, v6_limited: bool
) -> None:
    limiter = RateLimiter(10, 1, 1, 1, ip_versions=versions)
    for ip, limited in (("192.0.2.10", v4_limited), ("fe80::f816:3eff:fe00:1", v6_limited)):
        assert limiter.limits(ip) is limited
        waits = _run(limiter, [0.0, 0.0, 0.0], ip=ip)
        assert (waits[1] > 0) is limited, (ip, waits)
    assert len(limiter) == int(v4_limited) + int(v6_limited)  # unlimited callers: no state


def test_quiet_callers_are_forgotten() -> None:
    limiter = RateLimiter(base_window=10, base_limit=5, burst_window=1, burst_limit=5)
    for i in range(1023):
        limiter.allow(NET, f"192.0.2.{i % 250}", float(i % 5))
    assert len(limiter) == 250
    limiter.allow(NET, "198.51.100.1", 100.0)  # the 1024th call prunes the quiet ones
    assert len(limiter) <= 1


@pytest.mark.parametrize(
    "args", [(0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, 0), (1, 1, 1, 1, (5,))]
)
def test_bad_options_are_refused(args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        RateLimiter(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", list(ProxyMode), ids=str)
def test_the_agent_enforces_it_unless_haproxy_does(
    mode: ProxyMode, make_config: Callable[..., Config]
) -> None:
    enabled = make_config(
        metadata_proxy_mode=mode, metadata_rate_limiting={"rate_limit_enabled": 1}
    )
    assert (_limiter(enabled) is None) is (mode is ProxyMode.HAPROXY)
    assert _limiter(make_config(metadata_proxy_mode=mode)) is None  # Neutron's default: off


def test_a_link_local_caller_is_counted_by_its_mac_whatever_its_address() -> None:
    limiter = RateLimiter(10, 2, 10, 2, (6,))
    mac = "fa:16:3e:00:00:01"
    assert limiter.allow("net", "fe80::1", 0.0, mac) == 0
    assert limiter.allow("net", "fe80::2", 0.1, mac) == 0
    assert limiter.allow("net", "fe80::3", 0.2, mac) > 0  # a new address is no new budget
    assert limiter.allow("net", "fe80::3", 0.3, "fa:16:3e:00:00:02") == 0
