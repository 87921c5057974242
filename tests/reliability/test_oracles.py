#!/usr/bin/env python3
"""The map oracles of the differential suite (common.py) must accept the
documented differences and nothing else: a tolerance that accepts any
map would make the map comparison a test that cannot fail."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

M = 1 << 20


def ext(start, length, depth=0, present=True, zero=False, data=True, compressed=False):
    return {"start": start, "length": length, "depth": depth, "present": present,
            "zero": zero, "data": data, "compressed": compressed}


class BackingLeftOnlyDiff(unittest.TestCase):
    # seed 136719179 case 44: source top holds data in [4M, 6M) only; the
    # unpatched build writes [0, 6M) as compressed data, the patched build
    # only [4M, 6M)
    src = [ext(0, 4 * M, depth=2), ext(4 * M, 2 * M), ext(6 * M, 2 * M, depth=2, zero=True, data=False)]
    u = [ext(0, 6 * M, compressed=True), ext(6 * M, 2 * M, zero=True, data=False)]
    p = [ext(0, 4 * M, depth=2), ext(4 * M, 2 * M, compressed=True),
         ext(6 * M, 2 * M, depth=2, zero=True, data=False)]

    def test_accepts_ranges_left_to_the_backing_file(self):
        self.assertTrue(common.backing_left_only_diff(self.p, self.u, self.src))

    def test_identical_maps(self):
        self.assertTrue(common.backing_left_only_diff(self.u, self.u, self.src))

    def test_rejects_leaving_what_the_top_layer_holds(self):
        # P leaves [4M, 6M) to the backing file: the source's top holds it
        p = [ext(0, 6 * M, depth=2), ext(6 * M, 2 * M, depth=2, zero=True, data=False)]
        self.assertFalse(common.backing_left_only_diff(p, self.u, self.src))

    def test_rejects_writing_what_unpatched_leaves(self):
        # the other way round: P writes what U leaves
        self.assertFalse(common.backing_left_only_diff(self.u, self.p, self.src))

    def test_rejects_other_differences(self):
        # not compressed where U is, with the same allocation
        p = [ext(0, 6 * M), ext(6 * M, 2 * M, zero=True, data=False)]
        self.assertFalse(common.backing_left_only_diff(p, self.u, self.src))

    def test_zero_clusters_of_the_top_only_beyond_the_backing_end(self):
        # the top holds a zero cluster at [1M, 2M)
        src = [ext(0, 1 * M, depth=1), ext(1 * M, 1 * M, zero=True, data=False),
               ext(2 * M, 6 * M, depth=1)]
        u = [ext(0, 8 * M, compressed=True)]
        # beyond the end of the backing file (reads as zeroes): accepted
        p = [ext(0, 8 * M, present=False, zero=True, data=False)]
        self.assertTrue(common.backing_left_only_diff(p, u, src))
        # showing the backing file through: rejected
        p = [ext(0, 8 * M, depth=1)]
        self.assertFalse(common.backing_left_only_diff(p, u, src))

    def test_rejects_maps_of_different_lengths(self):
        self.assertFalse(common.backing_left_only_diff(self.p[:2], self.u, self.src))


if __name__ == "__main__":
    unittest.main(verbosity=2)
