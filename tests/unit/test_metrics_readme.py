"""README's table of metrics is the registry's: every family a cloudmeta process exports (the
admin API's inventory families included) is listed with its type and labels, and nothing else.

The names come from a real scrape's text through prometheus_client's parser; the labels from
the metric objects (a family without samples yet has no labels in the text)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.core import Metric
from prometheus_client.metrics import MetricWrapperBase

from cloudmeta import metrics
from cloudmeta.api.admin.metrics import inventory_families
from cloudmeta.config import Config
from cloudmeta.inventory import Store
from support.scrape import parse

README = Path(__file__).resolve().parents[2] / "README.md"
_ROW = re.compile(r"^\| `(cloudmeta_[a-z_]+)` \| (counter|gauge|histogram) \|([^|]*)\|")

Family = tuple[str, tuple[str, ...]]  # (type, label names)


def documented() -> dict[str, Family]:
    """The rows of README's metrics table: exported name -> (type, label names)."""
    section = README.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, Family] = {}
    for line in section.splitlines():
        found = _ROW.match(line)
        if found is None:
            continue
        name, kind, labels = found.groups()
        # A label is a backticked name outside the parentheses that list its values.
        labels = re.sub(r"\([^)]*\)", "", labels)
        assert name not in rows, f"{name} is listed twice"
        rows[name] = (kind, tuple(re.findall(r"`([a-z_]+)`", labels)))
    return rows


def exported(extra: list[Metric]) -> dict[str, Family]:
    """What this process's scrape exports, counters under their ``_total`` name."""
    wrappers = {
        value._name: value._labelnames
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)
    }
    labels: dict[str, tuple[str, ...]] = {}
    for family in [*REGISTRY.collect(), *extra]:
        names = getattr(family, "_labelnames", None)  # a collector's family knows its own
        labels[family.name] = tuple(names) if names is not None else wrappers[family.name]
    families, _ = parse(metrics.render(extra).decode())
    kinds = {f.name: f.type for f in [*REGISTRY.collect(), *extra]}
    found: dict[str, Family] = {}
    for name in families:
        if not name.startswith("cloudmeta_"):
            continue  # prometheus_client's own process_ and python_ families
        kind = kinds[name]
        found[name + ("_total" if kind == "counter" else "")] = (kind, labels[name])
    return found


async def test_readme_lists_exactly_the_exported_metrics(
    make_config: Callable[..., Config],
) -> None:
    store = await Store.open(make_config())
    try:
        extra = await inventory_families(store)
    finally:
        await store.close()
    listed, shipped = documented(), exported(extra)
    assert len(listed) >= 17  # the table was found and read
    assert sorted(set(shipped) - set(listed)) == [], "exported but not in README"
    assert sorted(set(listed) - set(shipped)) == [], "in README but not exported"
    assert {n: v for n, v in listed.items() if shipped[n] != v} == {}, shipped
