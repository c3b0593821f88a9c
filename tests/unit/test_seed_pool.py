"""``random_seed`` stays fresh per request: the pool hands out every random byte once."""

from __future__ import annotations

import base64
import itertools
import os

from cloudmeta.api.metadata.seed import SEED_BYTES, SeedPool


def test_seeds_are_512_random_bytes_each_and_differ() -> None:
    pool = SeedPool()
    seeds = [pool.next() for _ in range(200)]  # past several refills
    assert len(set(seeds)) == len(seeds)
    assert all(len(base64.b64decode(seed, validate=True)) == SEED_BYTES for seed in seeds)


def test_no_byte_of_the_source_is_used_twice() -> None:
    counter = itertools.count()
    reads: list[int] = []

    def source(size: int) -> bytes:
        reads.append(size)
        # Distinct 4-byte words: any reuse of a slice would show as a repeated word.
        return b"".join(next(counter).to_bytes(4, "big") for _ in range(size // 4))

    pool = SeedPool(size=8, batch=3, source=source)
    words = []
    for _ in range(7):
        raw = base64.b64decode(pool.next())
        assert len(raw) == 8
        words += [raw[:4], raw[4:]]
    assert len(set(words)) == len(words) == 14
    assert reads == [24, 24, 24]  # one read per 3 seeds


def test_a_forked_child_does_not_hand_out_its_parents_seeds() -> None:
    pool = SeedPool()
    pool.next()  # a batch is ready, in both processes after the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next seed, to the parent
        try:
            os.write(write_end, pool.next())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        childs = pipe.read()
    assert len(base64.b64decode(childs)) == SEED_BYTES
    assert childs != pool.next()  # without the fork hook: the same seed in both
