"""Isolation attacks from inside instance namespaces, in every proxy mode, on both paths
(network proxy in a DHCP-style namespace, router proxy): identity headers naming another
instance in every shape, overlapping IPs, another project, replayed/forged/expired tokens.
Each instance attacks every other one; the count of tries and of leaks goes to the report."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest
from attacks import families
from harness import Chain, start_chain
from scene import attack, build_scene, forbidden_for, victim_of

from cloudmeta.config import ProxyMode
from support.report import record, scaled

pytestmark = [pytest.mark.root, pytest.mark.soak]

# Per mode; the soak's total over the three modes is >= 10 000.
TRIES = scaled(600, 4200)
# What an attack may get: its own document (the spoof ignored), 400 (a folded or duplicated
# header refused), 401 (a token not its own), 404 (a path without data).
ALLOWED = {"200", "400", "401", "404"}


@pytest.fixture
async def chain(request: pytest.FixtureRequest, make_config: object) -> AsyncIterator[Chain]:
    made = await start_chain(make_config, request.param)
    try:
        yield made
    finally:
        await made.close()


@pytest.mark.parametrize("chain", list(ProxyMode), indirect=True, ids=str)
async def test_no_instance_gets_another_ones_data(chain: Chain) -> None:
    members = await build_scene(chain)
    per_attack: dict[str, Counter[str]] = {}
    leaks: list[object] = []
    per_pair = max(1, TRIES // (len(members) * (len(members) - 1)))
    for me in members:
        for other in members:
            if other is me:
                continue
            attacks = families(victim_of(chain, other), me.instance.ip)
            names = [name for name, raws in attacks.items() for _ in raws]
            raws = [raw for batch in attacks.values() for raw in batch]
            result = await attack(me, raws, max(per_pair, len(raws)), forbidden_for(members, me))
            leaks += result["examples"]
            for name, slot in zip(names, result["per_request"], strict=True):
                counter = per_attack.setdefault(name, Counter())
                counter["tries"] += slot["tries"]
                counter["leaks"] += slot["leaks"]
                for status, n in slot["statuses"].items():
                    counter[f"status_{status}"] += n
    for name, counter in per_attack.items():
        record("attack", f"{chain.config.metadata_proxy_mode}:{name}", **counter)
    total = sum(c["tries"] for c in per_attack.values())
    record(
        "attack",
        f"{chain.config.metadata_proxy_mode}:TOTAL",
        tries=total,
        leaks=sum(c["leaks"] for c in per_attack.values()),
    )
    assert not leaks, leaks
    bad = {
        name: {k: v for k, v in c.items() if k.startswith("status_") and k[7:] not in ALLOWED}
        for name, c in per_attack.items()
    }
    assert not any(bad.values()), bad
    # A replayed, expired or forged token is never accepted.
    for name in ("token-replayed", "token-expired", "token-forged"):
        assert set(per_attack[name]) - {"tries", "leaks"} <= {"status_401"}, per_attack[name]
