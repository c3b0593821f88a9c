"""The live lab page in a real browser: Debian's Chromium, driven by playwright, against
``cloudmeta lab up --instances 2``.

The page is opened as soon as ``lab up`` prints its URL, before any instance exists; it must
then show both instances ``ok`` by itself (the event stream, no reload), show each instance's
own ``meta_data.json`` as fetched from inside that instance, render a hostile network name as
text, and show an EC2 instance booted meanwhile by ``lab boot`` with its own EC2 documents.
The screenshots are kept (their paths are printed; see ``artefacts``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from labkit import CLI, assert_nothing_left, cli, free_port
from pagekit import CHROMIUM, FLAGS, artefact_dir
from playwright.sync_api import BrowserContext, Page, sync_playwright

from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.documents import ec2_id
from cloudmeta.lab.childenv import config_env
from cloudmeta.lab.state import load_state

pytestmark = [pytest.mark.root, pytest.mark.timeout(400)]

_URL = re.compile(r"page: (http://127\.0\.0\.1:\d+/)")
HOSTILE = '<img src=x onerror="window.cmtPwned=1">cmt-<b>net</b>'
ALL_OK = """() => document.querySelectorAll(
    '#instances tr[data-name] .result[data-result="ok"]').length === 2"""


class _LabUp:
    """``lab up`` in the background; its output is drained into ``lines`` by a thread."""

    def __init__(self, config: Config, port: int) -> None:
        env = {**os.environ, **config_env(config)}
        self.proc = subprocess.Popen(
            [*CLI, "lab", "up", "--instances", "2", "--web-port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self._seen = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = _URL.search(line)
            if found and self.url is None:
                self.url = found.group(1)
                self._seen.set()
        self._seen.set()  # EOF: lab up ended

    def wait_url(self, timeout: float = 120) -> str:
        self._seen.wait(timeout)
        assert self.url is not None, "lab up printed no page URL:\n" + self.output()
        return self.url

    def output(self) -> str:
        return "".join(self.lines[-60:])


@pytest.fixture
def lab_up(lab_config: Config) -> Iterator[_LabUp]:
    lab = _LabUp(lab_config, free_port())
    try:
        yield lab
    finally:
        if lab.proc.poll() is None:
            lab.proc.terminate()  # lab up tears its lab down on SIGTERM
            try:
                lab.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                lab.proc.kill()
                lab.proc.wait()
        cli(lab_config, "lab", "down", timeout=120)
    assert_nothing_left(lab_config)


@pytest.fixture
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return artefact_dir(tmp_path_factory.getbasetemp().parent, "lab-page")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "cmt-chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


async def _network(config: Config, name: str | None = None, delete: str | None = None) -> str:
    async with AdminClient(config) as client:
        if delete is not None:
            await client.delete_network(delete)
            return delete
        assert name is not None
        return str((await client.create_network(name))["id"])


def _api(config: Config, name: str | None = None, delete: str | None = None) -> str:
    """:func:`_network` from a thread of its own (playwright's sync API holds this one's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _network(config, name, delete)).result()


def _shot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_page_shows_the_lab_live_and_each_instance_its_own_documents(
    lab_config: Config, lab_up: _LabUp, browser: BrowserContext, artefacts: Path
) -> None:
    url = lab_up.wait_url()
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("#live.on")
    marker = secrets.token_hex(8)
    page.evaluate(f"window.cmtMarker = '{marker}'")  # gone if the page were reloaded
    assert not page.evaluate(ALL_OK), "the lab was up before the page was opened"

    hostile = _api(lab_config, HOSTILE)
    try:
        page.wait_for_function(ALL_OK, timeout=300_000)
        cell = page.locator("#networks td", has_text="cmt-<b>net</b>")
        assert cell.first.text_content() == HOSTILE
        assert page.evaluate("window.cmtPwned") is None
        assert page.locator("#networks img, #networks b").count() == 0
    except Exception:
        _shot(page, artefacts / "lab-page-failed.png")
        print(lab_up.output())
        raise
    finally:
        _api(lab_config, delete=hostile)
    assert page.evaluate("window.cmtMarker") == marker, "the page was reloaded"
    page.wait_for_function(
        "() => !document.querySelector('#networks').textContent.includes('cmt-<b>')"
    )
    state = load_state(lab_config)
    assert state is not None
    rows = page.locator("#instances tr[data-name]")
    assert rows.count() == 2
    for i in range(2):
        name = rows.nth(i).get_attribute("data-name") or ""
        cells = rows.nth(i).locator("td")
        assert cells.nth(2).text_content() == state.instances[name].ip
        assert cells.nth(3).text_content() in ("dhcp", "router")
        assert cells.nth(5).text_content() == f"{name}-lab"
        assert float(cells.nth(7).text_content() or "") > 0, "no boot time"
    assert page.locator("#nodes tbody tr").count() == 1
    assert page.locator("#routers tbody tr", has_text="lab-router").count() == 1
    # The all-in-one's /metrics: a line per hop the instances' requests went through (the
    # inline proxy, the agent, the API), requests/s and p99 for each.
    page.wait_for_function(
        "() => document.querySelectorAll('#chart-rps polyline').length === 3"
        " && document.querySelectorAll('#chart-p99 polyline').length === 3",
        timeout=30_000,
    )
    assert page.locator(".metrics").get_attribute("data-status") == "ok"
    assert page.locator("#metrics-legend").text_content() == "proxyagentapi"
    status = page.locator("#metrics-status").text_content() or ""
    assert all(f"{hop}: " in status for hop in ("proxy", "agent", "api")), status
    _shot(page, artefacts / "lab-page.png")
    ids = {name: inst.server_id for name, inst in state.instances.items()}
    assert len(set(ids.values())) == 2
    for name, server_id in ids.items():
        page.goto(f"{url}instances/{name}")
        doc = page.locator('article[data-path="/openstack/latest/meta_data.json"]')
        doc.wait_for(timeout=60_000)
        assert doc.get_attribute("data-status") == "200", doc.text_content()
        meta = json.loads(doc.locator("pre").text_content() or "")
        assert meta["uuid"] == server_id
        assert meta["name"] == name
        # The page's own fetches are the instance's recent requests, live as well.
        page.wait_for_function(
            "() => [...document.querySelectorAll('#requests td')]"
            ".some((td) => td.textContent === '/openstack/latest/meta_data.json')"
        )
        assert page.locator("#facts td", has_text=server_id).count() == 1
        _shot(page, artefacts / f"lab-page-{name}.png")

    # An EC2 instance booted by another process (`lab boot`) appears live on the lab page, and
    # its own page reads the EC2 tree with an IMDSv2 token, as cloud-init did.
    page.goto(url)
    page.wait_for_selector("#live.on")
    booted = cli(lab_config, "lab", "boot", "cmt-ec2", "--network", "isolated",
                 "--datasource", "Ec2")  # fmt: skip
    assert booted.returncode == 0, booted.stdout[-3000:] + booted.stderr[-3000:]
    page.wait_for_function(ALL_OK.replace("=== 2", "=== 3"), timeout=60_000)
    state = load_state(lab_config)
    assert state is not None
    ec2 = state.instances["cmt-ec2"]
    page.goto(f"{url}instances/cmt-ec2")
    token = page.locator('article[data-path="/latest/api/token"]')
    token.wait_for(timeout=60_000)
    assert token.get_attribute("data-status") == "200"
    assert "not shown" in (token.locator("pre").text_content() or "")
    ident = page.locator('article[data-path="/latest/dynamic/instance-identity/document"]')
    assert ident.get_attribute("data-status") == "200", ident.text_content()
    document = json.loads(ident.locator("pre").text_content() or "")
    assert document["instanceId"] == ec2_id("i", ec2.server_id)
    assert document["privateIp"] == ec2.ip
    _shot(page, artefacts / "lab-page-cmt-ec2.png")
    assert errors == []
