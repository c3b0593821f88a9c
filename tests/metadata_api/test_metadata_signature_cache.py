"""The remembered signature check: valid pairs skip the HMAC, forged ones are never kept."""

from __future__ import annotations

from cloudmeta.api.metadata.identity import SignatureCheck, sign_instance_id

SECRET = b"cmt-secret"


def test_valid_pairs_are_remembered_and_forged_ones_refused_every_time() -> None:
    check = SignatureCheck(SECRET, limit=2)
    good = sign_instance_id(SECRET, "cmt-a")
    assert check("cmt-a", good)
    assert check("cmt-a", good)  # from the set now
    assert not check("cmt-a", "0" * 64)
    assert not check("cmt-a", "")
    assert not check("cmt-b", good)  # another instance's signature
    assert check._valid == {("cmt-a", good)}
    for name in ("cmt-b", "cmt-c"):  # past the bound the set starts over
        assert check(name, sign_instance_id(SECRET, name))
    assert len(check._valid) <= 2
    assert check("cmt-a", good)
