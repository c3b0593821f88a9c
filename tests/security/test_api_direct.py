"""Requests straight to the metadata API (8775) without the agent: every identity the caller
makes up is refused, and the signature check takes the same time wherever a guess goes wrong."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import statistics
import time

import pytest
from metadata_cloud import SECRET, Api, signed
from multidict import CIMultiDict

from cloudmeta.api.metadata.errors import MetadataError
from cloudmeta.api.metadata.identity import SignatureCheck, sign_instance_id, signed_caller
from support.report import SOAK, record, scaled

pytestmark = pytest.mark.soak

DOC = "/openstack/latest/meta_data.json"


def _flip(signature: str, at: int) -> str:
    """``signature`` with the hex digit at ``at`` changed."""
    digit = "0" if signature[at] != "0" else "1"
    return signature[:at] + digit + signature[at + 1 :]


async def test_made_up_identities_are_refused(api: Api) -> None:
    a0, b0 = api.cloud.servers["a0"], api.cloud.servers["b0"]
    project = api.cloud.project
    good = signed(a0, project)
    sig = "X-Instance-ID-Signature"
    cases: list[tuple[str, dict[str, str], int]] = [
        ("no headers", {}, 400),
        ("no signature", {k: v for k, v in good.items() if k != "X-Instance-ID-Signature"}, 400),
        ("no tenant", {k: v for k, v in good.items() if k != "X-Tenant-ID"}, 400),
        ("empty signature", {**good, "X-Instance-ID-Signature": ""}, 403),
        ("wrong signature", {**good, "X-Instance-ID-Signature": "0" * 64}, 403),
        ("upper-case hex", {**good, sig: good[sig].upper()}, 403),
        ("signature of another instance", {**good, "X-Instance-ID": b0}, 403),
        ("signed with another secret", {**good, sig: sign_instance_id(b"cmt-other", a0)}, 403),
        ("sha1 signature", {**good, sig: hashlib.sha1(a0.encode()).hexdigest()}, 403),
        ("valid signature, another project", {**good, "X-Tenant-ID": secrets.token_hex(16)}, 404),
        ("valid signature, unknown instance", signed("cmt-no-such", project), 404),
    ]
    for name, headers, expected in cases:
        status, body, _ = await api.get(DOC, name=None, headers=headers)
        assert status == expected, (name, status, body)
        assert a0.encode() not in body and b0.encode() not in body, name
    # Many random wrong signatures: all 403, none leaks.
    tries = scaled(300, 5000)
    for _ in range(tries):
        headers = {**good, "X-Instance-ID-Signature": secrets.token_hex(32)}
        status, body, _ = await api.get(DOC, name=None, headers=headers)
        assert status == 403 and a0.encode() not in body
    record("attack", "direct-8775:forged-signatures", tries=tries + len(cases), leaks=0)
    status, body, _ = await api.get(DOC, name="a0")
    assert status == 200 and a0.encode() in body


def _median_ns(headers: CIMultiDict[str], rounds: int) -> float:
    check = SignatureCheck(SECRET.encode())
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        with contextlib.suppress(MetadataError):
            signed_caller(headers, check)
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples)


def test_signature_check_takes_the_same_time_wherever_it_differs() -> None:
    """Interleaved batches of wrong signatures differing at the first vs the last hex digit.
    ``hmac.compare_digest`` must not show a trend; a short-circuit compare of 64 characters
    would make the last-digit guesses measurably slower. Both are refused in every run; the
    loose bound on their ratio is held under the soak only (a busy machine's scheduler noise is
    not a trend), the figures are recorded in every run."""
    instance = "cmt-" + secrets.token_hex(16)
    right = sign_instance_id(SECRET.encode(), instance)
    base = CIMultiDict({"X-Instance-ID": instance, "X-Tenant-ID": "cmt-project"})
    first = CIMultiDict(base, **{"X-Instance-ID-Signature": _flip(right, 0)})
    last = CIMultiDict(base, **{"X-Instance-ID-Signature": _flip(right, 63)})
    batches, rounds = scaled(20, 200), 500
    for wrong in (first, last):
        with pytest.raises(MetadataError):
            signed_caller(wrong, SignatureCheck(SECRET.encode()))
    firsts, lasts = [], []
    for _ in range(batches):
        firsts.append(_median_ns(first, rounds))
        lasts.append(_median_ns(last, rounds))
    f, la = statistics.median(firsts), statistics.median(lasts)
    ratio = la / f
    record(
        "timing",
        "signature-compare",
        samples=batches * rounds * 2,
        first_digit_ns=f,
        last_digit_ns=la,
        ratio=ratio,
    )
    if SOAK:
        assert 0.5 < ratio < 2.0, (f, la)
