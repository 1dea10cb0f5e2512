"""RFC 6962 / 9162 Merkle trees: known answers, a naive reference, and refused proofs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import InvalidProof
from eventstore.merkle import (
    EMPTY_ROOT,
    RootBuilder,
    consistency_path,
    inclusion_path,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# The test data of the Certificate Transparency reference implementation
# (also transparency-dev/merkle's testonly package).
LEAF_HEX = "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"
LEAVES = [bytes.fromhex(h) for h in LEAF_HEX]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = {  # (index, size): audit path
    (0, 1): [],
    (0, 2): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
    (1, 2): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CONSISTENCY = {  # (old size, new size): proof
    (1, 1): [],
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


# -- a naive reference: the RFC's recursive definitions, written out literally --


def ref_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return [] if m in (0, len(d)) else ref_subproof(m, d, True)


def hexes(nodes: list[bytes]) -> list[str]:
    return [n.hex() for n in nodes]


def leaves_of(size: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(size)]


class TestKnownAnswers:
    def test_empty_tree(self) -> None:
        assert root_hash([]) == EMPTY_ROOT == ref_mth([])
        assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    @pytest.mark.parametrize("size", range(1, 9))
    def test_roots(self, size: int) -> None:
        assert root_hash(LEAVES[:size]).hex() == ROOTS[size - 1] == ref_mth(LEAVES[:size]).hex()

    @pytest.mark.parametrize(("index", "size"), INCLUSION)
    def test_inclusion_paths(self, index: int, size: int) -> None:
        path = inclusion_path(index, LEAVES[:size])
        assert hexes(path) == INCLUSION[index, size] == hexes(ref_path(index, LEAVES[:size]))
        verify_inclusion(LEAVES[index], index, size, path, bytes.fromhex(ROOTS[size - 1]))

    @pytest.mark.parametrize(("old", "new"), CONSISTENCY)
    def test_consistency_proofs(self, old: int, new: int) -> None:
        path = consistency_path(old, LEAVES[:new])
        assert hexes(path) == CONSISTENCY[old, new] == hexes(ref_proof(old, LEAVES[:new]))
        verify_consistency(old, new, bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1]), path)


class TestAgainstTheReference:
    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
    def test_roots_and_proofs_match_and_verify(self, leaves: list[bytes], data: st.DataObject) -> None:
        size = len(leaves)
        index = data.draw(st.integers(0, size - 1))
        old = data.draw(st.integers(0, size))
        root = root_hash(leaves)
        assert root == ref_mth(leaves)
        path = inclusion_path(index, leaves)
        assert path == ref_path(index, leaves)
        verify_inclusion(leaves[index], index, size, path, root)
        proof = consistency_path(old, leaves)
        assert proof == ref_proof(old, leaves)
        verify_consistency(old, size, ref_mth(leaves[:old]), root, proof)

    @given(st.lists(st.integers(0, 4), max_size=12))
    def test_the_incremental_builder_gives_the_same_root(self, heights: list[int]) -> None:
        builder, leaves = RootBuilder(), []
        for height in heights:
            if builder.size % (1 << height):
                height = 0
            chunk = leaves_of(len(leaves) + (1 << height))[len(leaves) :]
            closed = builder.push_subtree(height, root_hash(chunk))
            leaves += chunk
            assert all(h == ref_mth(leaves[s : s + (1 << hh)]) for hh, s, h in closed)
            assert builder.root() == ref_mth(leaves)
        assert builder.size == len(leaves)


def flipped(value: bytes, bit: int) -> bytes:
    return value[: bit // 8] + bytes([value[bit // 8] ^ (1 << (bit % 8))]) + value[bit // 8 + 1 :]


def each_bit_flip(path: list[bytes]) -> list[list[bytes]]:
    return [[*path[:i], flipped(n, bit), *path[i + 1 :]] for i, n in enumerate(path) for bit in range(256)]


def refused(check: Callable[..., None], *args: Any) -> bool:
    try:
        check(*args)
    except InvalidProof:
        return True
    return False


SIZES = [1, 2, 3, 5, 7, 8, 13, 16, 17]


class TestInclusionRefusals:
    @pytest.mark.parametrize("size", SIZES)
    def test_every_single_bit_flip_is_refused(self, size: int) -> None:
        leaves = leaves_of(size)
        root = root_hash(leaves)
        for index in range(size):
            path = inclusion_path(index, leaves)
            for bad in each_bit_flip(path):
                assert refused(verify_inclusion, leaves[index], index, size, bad, root)
            for bit in range(256):
                assert refused(verify_inclusion, leaves[index], index, size, path, flipped(root, bit))
            assert refused(verify_inclusion, flipped(leaves[index], 0), index, size, path, root)

    @pytest.mark.parametrize("size", SIZES)
    def test_truncated_extended_reordered_are_refused(self, size: int) -> None:
        leaves = leaves_of(size)
        root = root_hash(leaves)
        for index in range(size):
            path = inclusion_path(index, leaves)
            variants = [[*path, root], [root, *path], [*path, b""], path[::-1] if len(path) > 1 else [root]]
            variants += [path[:-1], path[1:]] if path else []
            for bad in variants:
                assert refused(verify_inclusion, leaves[index], index, size, bad, root), (index, bad)

    @pytest.mark.parametrize("size", SIZES)
    def test_wrong_index_or_size_is_refused(self, size: int) -> None:
        leaves = leaves_of(20)
        roots = [root_hash(leaves[:n]) for n in range(21)]
        for index in range(size):
            path = inclusion_path(index, leaves[:size])
            for other in range(size + 2):
                if other != index:
                    assert refused(verify_inclusion, leaves[index], other, size, path, roots[size])
            for other in range(1, 21):
                if other != size:
                    assert refused(verify_inclusion, leaves[index], index, other, path, roots[other])

    def test_malformed_inputs_say_why(self) -> None:
        root = bytes(32)
        with pytest.raises(InvalidProof, match="outside a tree of size 4"):
            verify_inclusion(b"x", 4, 4, [root, root], root)
        with pytest.raises(InvalidProof, match="tree size must be an int >= 1"):
            verify_inclusion(b"x", 0, 0, [], root)
        with pytest.raises(InvalidProof, match="node 1 of the inclusion proof is not a 32-byte hash"):
            verify_inclusion(b"x", 0, 4, [root, root[:31]], root)
        with pytest.raises(InvalidProof, match="has 3 nodes; it must have 2"):
            verify_inclusion(b"x", 0, 4, [root] * 3, root)
        with pytest.raises(InvalidProof, match="the root is not a 32-byte hash"):
            verify_inclusion(b"x", 0, 1, [], b"short")


class TestConsistencyRefusals:
    @pytest.mark.parametrize("new", SIZES)
    def test_every_single_bit_flip_is_refused(self, new: int) -> None:
        leaves = leaves_of(new)
        new_root = root_hash(leaves)
        for old in range(1, new):
            old_root, path = root_hash(leaves[:old]), consistency_path(old, leaves)
            for bad in each_bit_flip(path):
                assert refused(verify_consistency, old, new, old_root, new_root, bad)
            assert refused(verify_consistency, old, new, flipped(old_root, 7), new_root, path)
            assert refused(verify_consistency, old, new, old_root, flipped(new_root, 7), path)

    @pytest.mark.parametrize("new", SIZES)
    def test_truncated_extended_and_wrong_sizes_are_refused(self, new: int) -> None:
        leaves = leaves_of(24)
        roots = [root_hash(leaves[:n]) for n in range(25)]
        for old in range(1, new):
            path = consistency_path(old, leaves[:new])
            for bad in [path[:-1], path[1:], [*path, roots[new]], [roots[old], *path], []]:
                assert refused(verify_consistency, old, new, roots[old], roots[new], bad), (old, bad)
            for other in range(1, 25):
                if other != old:
                    assert refused(verify_consistency, other, new, roots[other], roots[new], path)
                if other != new:
                    assert refused(verify_consistency, old, other, roots[old], roots[other], path)

    def test_equal_sizes_need_equal_roots_and_no_nodes(self) -> None:
        a, b = root_hash(LEAVES[:3]), root_hash(LEAVES[:4])
        verify_consistency(3, 3, a, a, [])
        with pytest.raises(InvalidProof, match="two different roots for the same tree size 3"):
            verify_consistency(3, 3, a, b, [])
        with pytest.raises(InvalidProof, match="has 1 nodes; it must have 0"):
            verify_consistency(3, 3, a, a, [a])

    def test_an_empty_old_tree_needs_the_empty_root_and_no_nodes(self) -> None:
        new_root = root_hash(LEAVES[:3])
        verify_consistency(0, 3, EMPTY_ROOT, new_root, [])
        with pytest.raises(InvalidProof, match="the old tree is empty, but its root is not the empty tree's"):
            verify_consistency(0, 3, new_root, new_root, [])
        with pytest.raises(InvalidProof, match="has 1 nodes; it must have 0"):
            verify_consistency(0, 3, EMPTY_ROOT, new_root, [new_root])

    def test_malformed_inputs_say_why(self) -> None:
        a = root_hash(LEAVES[:3])
        with pytest.raises(InvalidProof, match="old tree size 5 is larger than the new one, 3"):
            verify_consistency(5, 3, a, a, [a])
        with pytest.raises(InvalidProof, match="node 0 of the consistency proof is not a 32-byte hash"):
            verify_consistency(2, 3, a, a, [b"x" * 31])
        with pytest.raises(InvalidProof, match="old tree size must be an int >= 0"):
            verify_consistency(-1, 3, a, a, [])
