"""The package's numba caches are stamped with the hash of all its sources (``_jitcache``)."""

import numba
import numpy as np
from numba.core import caching

import marl_kstep._jitcache as jc
from marl_kstep.estimators import _fused, _walk


def test_package_kernels_carry_the_package_stamp():
    for disp in (_fused.fused_small, _walk.values_kind, _walk._k2_rows):
        cache_file = disp._cache._cache_file
        assert isinstance(disp._cache._impl.locator, jc._PackageStamp)
        assert cache_file._source_stamp == ("marl_kstep sources", jc._sources_hash())


def test_other_kernels_keep_numbas_own_stamp():
    @numba.njit(cache=True)
    def outside(x):
        return x + 1

    outside(np.int64(1))
    locator = outside._cache._impl.locator
    assert not isinstance(locator, jc._PackageStamp)
    assert outside._cache._cache_file._source_stamp != ("marl_kstep sources", jc._sources_hash())


def test_an_index_written_by_other_sources_is_ignored(tmp_path):
    """An index stamped by another version of the sources (a process still running old code)
    loads as empty, so its machine code is never used."""
    locator = _walk._k2_rows._cache._impl.locator

    class Elsewhere(type(locator)):
        def get_cache_path(self):
            return str(tmp_path)

    mine = Elsewhere(_walk._k2_rows.py_func, _walk.__file__)
    index = caching.IndexDataCacheFile(str(tmp_path), "k2.test", mine.get_source_stamp())
    index.save("key", b"machine code")
    assert index.load("key") == b"machine code"
    assert caching.IndexDataCacheFile(str(tmp_path), "k2.test", ("marl_kstep sources", "0" * 64)).load("key") is None


def test_installing_twice_adds_nothing():
    before = list(caching.CacheImpl._locator_classes)
    jc._install_locators()
    assert caching.CacheImpl._locator_classes == before
    assert sum(issubclass(c, jc._PackageStamp) for c in before) == 3
