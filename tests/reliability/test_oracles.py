#!/usr/bin/env python3
"""The map oracles of the differential suite (common.py) must accept the
documented differences and nothing else: a tolerance that accepts any
map would make the map comparison a test that cannot fail.

Each case is named by what it asserts: test_accepts_* asserts that the
oracle accepts (assertTrue only), test_rejects_* that it rejects, with
exactly one assertFalse and nothing else.  tests/oracles.sh runs them a
second time against an oracle that accepts everything
(QCE_ORACLE_ACCEPT_ALL=1) and requires that exactly the test_rejects_*
cases fail there; test_case_names_say_what_they_assert checks the naming,
so a rejection cannot hide in an acceptance case or the other way round."""
import ast
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

if os.environ.get("QCE_ORACLE_ACCEPT_ALL") == "1":
    # the mutation tests/oracles.sh checks: every rejection case must fail
    common.sparser_only_diff = lambda p, u, src: True
    common.denser_only_diff = lambda p, u, src: True

M = 1 << 20


def ext(start, length, depth=0, present=True, zero=False, data=True, compressed=False):
    return {"start": start, "length": length, "depth": depth, "present": present,
            "zero": zero, "data": data, "compressed": compressed}


class SparserOnlyDiff(unittest.TestCase):
    # seed 136719179 case 44: the source's top holds data in [4M, 6M)
    # only; the unpatched build writes [0, 6M) as compressed data, the
    # patched build only [4M, 6M)
    src = [ext(0, 4 * M, depth=2), ext(4 * M, 2 * M), ext(6 * M, 2 * M, depth=2, zero=True, data=False)]
    u = [ext(0, 6 * M, compressed=True), ext(6 * M, 2 * M, zero=True, data=False)]
    p = [ext(0, 4 * M, depth=2), ext(4 * M, 2 * M, compressed=True),
         ext(6 * M, 2 * M, depth=2, zero=True, data=False)]

    # seed 805035973 case 115: the source's top holds zero clusters in
    # [0, 3M) and 4 KiB of data in [3M, 4M); U writes [0, 4M) as data,
    # P zero clusters in [0, 3M)
    zc_src = [ext(0, 3 * M + 4096, zero=True, data=False), ext(3 * M + 4096, 4096),
              ext(3 * M + 8192, M - 8192, zero=True, data=False)]
    zc_u = [ext(0, 4 * M)]
    zc_p = [ext(0, 3 * M, zero=True, data=False), ext(3 * M, M)]

    # seed 2922872529 case 14 (-n, a target holding old data, no backing
    # file): U writes a zero range as data, P as zero clusters
    old_src = [ext(0, 3 * M), ext(3 * M, 2 * M, zero=True, data=False)]
    old_u = [ext(0, 5 * M)]
    old_p = [ext(0, 3 * M), ext(3 * M, 2 * M, zero=True, data=False)]

    # seed 136719179 case 92: a 512-byte backing file; the source's top
    # holds a zero cluster at [1M, 2M), and nothing elsewhere
    short_src = [ext(0, 1 * M, present=False, zero=True, data=False),
                 ext(1 * M, 1 * M, zero=True, data=False),
                 ext(2 * M, 6 * M, present=False, zero=True, data=False)]
    short_u = [ext(0, 8 * M, compressed=True)]

    def diff(self, p, u, src):
        return common.sparser_only_diff(p, u, src)

    def test_accepts_ranges_left_to_the_backing_file(self):
        self.assertTrue(self.diff(self.p, self.u, self.src))

    def test_accepts_identical_maps(self):
        self.assertTrue(self.diff(self.u, self.u, self.src))

    def test_rejects_leaving_what_the_top_layer_holds(self):
        # P leaves [4M, 6M) to the backing file: the source's top holds it
        p = [ext(0, 6 * M, depth=2), ext(6 * M, 2 * M, depth=2, zero=True, data=False)]
        self.assertFalse(self.diff(p, self.u, self.src))

    def test_rejects_writing_what_unpatched_leaves(self):
        # the other way round: P writes what U leaves
        self.assertFalse(self.diff(self.u, self.p, self.src))

    def test_rejects_other_differences(self):
        # not compressed where U is, with the same allocation
        p = [ext(0, 6 * M), ext(6 * M, 2 * M, zero=True, data=False)]
        self.assertFalse(self.diff(p, self.u, self.src))

    def test_accepts_zero_clusters_where_unpatched_writes_data(self):
        self.assertTrue(self.diff(self.zc_p, self.zc_u, self.zc_src))

    def test_rejects_zero_clusters_where_the_source_has_data(self):
        self.assertFalse(self.diff(self.zc_p, self.zc_u, [ext(0, 4 * M)]))

    def test_rejects_zero_clusters_where_the_source_shows_its_backing_file(self):
        # (data from there)
        self.assertFalse(self.diff(self.zc_p, self.zc_u, [ext(0, 4 * M, depth=1)]))

    def test_accepts_zero_clusters_over_old_data(self):
        self.assertTrue(self.diff(self.old_p, self.old_u, self.old_src))

    def test_rejects_zero_clusters_over_old_data_where_the_source_has_data(self):
        self.assertFalse(self.diff(self.old_p, self.old_u, [ext(0, 5 * M)]))

    def test_accepts_nothing_beyond_the_backing_end(self):
        # P leaves it all unallocated, reading as zeroes
        p = [ext(0, 8 * M, present=False, zero=True, data=False)]
        self.assertTrue(self.diff(p, self.short_u, self.short_src))

    def test_rejects_backing_data_beyond_the_backing_end(self):
        # P showing a backing file's data there
        p = [ext(0, 8 * M, depth=1)]
        self.assertFalse(self.diff(p, self.short_u, self.short_src))

    def test_rejects_zeroes_where_the_source_has_data(self):
        src = [ext(0, 8 * M)]
        u = [ext(0, 8 * M)]
        p = [ext(0, 8 * M, present=False, zero=True, data=False)]
        self.assertFalse(self.diff(p, u, src))

    def test_rejects_maps_of_different_lengths(self):
        self.assertFalse(self.diff(self.p[:2], self.u, self.src))


class DenserOnlyDiff(unittest.TestCase):
    # seed 908048242 case 125 (parallels target, -n): the source's top
    # reads zeroes in [3M, 5M) but for 512 bytes at 4499968; the unpatched
    # build leaves [3M, 4M) unallocated, the patched build wrote it as
    # part of a data chunk
    src = [ext(0, 3 * M), ext(3 * M, 2 * M, zero=True, data=False), ext(5 * M, M)]
    u = [ext(0, 3 * M), ext(3 * M, M, present=False, zero=True, data=False), ext(4 * M, 2 * M)]
    p = [ext(0, 6 * M)]

    def diff(self, p, u, src):
        return common.denser_only_diff(p, u, src)

    def test_accepts_data_where_unpatched_and_source_read_zeroes(self):
        self.assertTrue(self.diff(self.p, self.u, self.src))

    def test_accepts_identical_maps(self):
        self.assertTrue(self.diff(self.u, self.u, self.src))

    def test_rejects_data_where_the_source_has_data_and_unpatched_none(self):
        # U leaves a range out that the source holds data in: P's data
        # there is not explained by a merged zero run
        src = [ext(0, 6 * M)]
        self.assertFalse(self.diff(self.p, self.u, src))

    def test_rejects_a_hole_where_unpatched_has_data(self):
        # the other way round: P sparser is not what this oracle accepts
        self.assertFalse(self.diff(self.u, self.p, self.src))


class CaseStructure(unittest.TestCase):
    """Not an oracle case (it passes against any oracle): the names of the
    cases above say what they assert, which tests/oracles.sh relies on."""

    def test_case_names_say_what_they_assert(self):
        with open(os.path.abspath(__file__)) as f:
            tree = ast.parse(f.read())
        errors, n = [], 0
        for cls in tree.body:
            if not isinstance(cls, ast.ClassDef) or cls.name == "CaseStructure":
                continue
            for fn in cls.body:
                if not isinstance(fn, ast.FunctionDef) or not fn.name.startswith("test"):
                    continue
                n += 1
                calls = [c.func.attr for c in ast.walk(fn) if isinstance(c, ast.Call)
                         and isinstance(c.func, ast.Attribute)
                         and c.func.attr.startswith("assert")]
                where = f"{cls.name}.{fn.name} (line {fn.lineno})"
                if fn.name.startswith("test_rejects_"):
                    if calls != ["assertFalse"]:
                        errors.append(f"{where}: a rejection case makes exactly one "
                                      f"assertion, an assertFalse, not {calls}")
                elif fn.name.startswith("test_accepts_"):
                    if not calls or set(calls) != {"assertTrue"}:
                        errors.append(f"{where}: an acceptance case asserts with "
                                      f"assertTrue only, not {calls}")
                else:
                    errors.append(f"{where}: neither test_accepts_* nor test_rejects_*")
        self.assertEqual(errors, [])
        self.assertGreater(n, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
