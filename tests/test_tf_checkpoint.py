"""Tests for the TensorFlow-free V2 checkpoint reader (spinenet.convert.tf_checkpoint).

Real checkpoints come from the parity fixtures in ``shared/fixtures/parity``
(written by TensorFlow itself, with a ``keys.tsv`` from ``tf.train.list_variables``).
Dtypes the fixtures do not contain are checked on small bundles written by the
minimal writer at the bottom of this file.
"""

from __future__ import annotations

import json
import shutil
import struct
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from conftest import PARITY, require_shared
from spinenet.convert.tf_checkpoint import (
    CheckpointFormatError,
    TFCheckpoint,
    crc32c,
    masked_crc32c,
    object_graph_names,
)

OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"

KNOWN_FIXTURES = [
    "mg_retinanet_spinenet49_tiny",
    "mg_spinenet49_tiny_backbone",
    "mg_spinenet49_tiny_swish_repeats",
    "mg_spinenet_mobile49xs_backbone",
    "tpu_classifier_spinenet49_tiny_224",
    "tpu_spinenet49_tiny_backbone",
]
# Parametrise over the known fixtures even when shared/ is absent, so that CI fails loudly instead
# of collecting nothing; fixtures added later are picked up too.
_FOUND = {p.name for p in PARITY.iterdir() if p.is_dir()} if PARITY.is_dir() else set()
FIXTURES = sorted(set(KNOWN_FIXTURES) | _FOUND)


def require_parity_dir() -> Path:
    """The parity fixture folder; skip if absent locally, fail if absent in CI (see conftest)."""
    return require_shared(PARITY)


def fixture_prefix(name: str) -> Path:
    folder = require_parity_dir() / name
    indexes = sorted(folder.glob("*.index"))
    assert len(indexes) == 1, f"{folder}: expected exactly one .index file, found {indexes}"
    return indexes[0].with_suffix("")


def read_keys_tsv(name: str) -> list[tuple[str, tuple[int, ...], str, str]]:
    rows = []
    lines = (require_parity_dir() / name / "keys.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:3] == ["key", "shape", "dtype"]
    for line in lines[1:]:
        key, shape, dtype, fourth = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("[]").split(",") if d)
        rows.append((key, dims, dtype, fourth))
    return rows


@cache
def read_all(name: str) -> dict[str, np.ndarray | bytes]:
    """Every tensor of a fixture, read with CRC verification (cached: several tests use it)."""
    ckpt = TFCheckpoint(fixture_prefix(name), verify=True)
    return {key: ckpt.read(key) for key in ckpt}


# --------------------------------------------------------------------------- #
# CRC32C
# --------------------------------------------------------------------------- #


def _crc32c_bitwise(data: bytes) -> int:
    """Slow reference implementation straight from the definition."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_vectors() -> None:
    # RFC 3720 (iSCSI) appendix B.4 test vectors and the usual check value.
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C


def test_crc32c_vectorised_path_matches_reference() -> None:
    rng = np.random.default_rng(0)
    # Sizes around the switch to numpy lanes (8 KiB), odd tails, and > one 1 MiB block.
    for size in [1, 7, 8191, 8192, 8193, 12_345, 65_536 + 3, (1 << 20) + 4097, 2_500_001]:
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        expected = _crc32c_bitwise(data) if size < 20_000 else _crc32c_bitwise_chunked(data)
        assert crc32c(data) == expected, size
        # Extending a CRC equals the CRC of the concatenation.
        cut = size // 3
        assert crc32c(data[cut:], crc32c(data[:cut])) == expected, size


def _crc32c_bitwise_chunked(data: bytes) -> int:
    # The bit-by-bit reference is too slow for MBs; the module's small-buffer
    # path (< 8 KiB) is checked against it above, so use that via small chunks.
    crc = 0
    for start in range(0, len(data), 4096):
        crc = crc32c(data[start : start + 4096], crc)
    return crc


def test_masked_crc32c() -> None:
    crc = crc32c(b"123456789")
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    assert masked_crc32c(b"123456789") == (rotated + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------- #
# Real checkpoints written by TensorFlow
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", FIXTURES)
def test_keys_shapes_dtypes_match_keys_tsv(name: str) -> None:
    rows = read_keys_tsv(name)
    ckpt = TFCheckpoint(fixture_prefix(name))
    assert ckpt.keys() == [key for key, *_ in rows]  # same set, same (sorted) order
    assert len(ckpt) == len(rows)
    for key, shape, dtype, _ in rows:
        assert key in ckpt
        assert ckpt.shape(key) == shape, key
        assert ckpt.tf_dtype(key) == dtype, key
        expected = {"float32": np.float32, "int64": np.int64, "string": object}[dtype]
        assert ckpt.dtype(key) == np.dtype(expected), key


@pytest.mark.parametrize("name", FIXTURES)
def test_every_tensor_reads_with_verified_crc(name: str) -> None:
    ckpt = TFCheckpoint(fixture_prefix(name))
    tensors = read_all(name)
    assert sorted(tensors) == ckpt.keys()
    for key, value in tensors.items():
        if ckpt.tf_dtype(key) == "string":
            assert isinstance(value, bytes) and len(value) > 0, key
            continue
        assert isinstance(value, np.ndarray), key
        assert value.shape == ckpt.shape(key), key
        assert value.dtype == ckpt.dtype(key), key
        assert np.all(np.isfinite(value)), key
        assert value.flags.writeable, key
    # The step counter of a freshly written checkpoint.
    step_key = next(k for k in tensors if k.split("/")[0] == "global_step")
    assert tensors[step_key] == 0 and tensors[step_key].dtype == np.int64
    # items()/as_dict() give exactly the numeric tensors.
    numeric = ckpt.as_dict()
    assert set(numeric) == {k for k in ckpt if ckpt.tf_dtype(k) != "string"}
    some_key = max(numeric, key=lambda k: numeric[k].size)
    np.testing.assert_array_equal(numeric[some_key], tensors[some_key])


@pytest.mark.parametrize("name", FIXTURES)
def test_batch_norm_statistics_match_the_fixture_recipe(name: str) -> None:
    # The fixture README: gamma ~ U(0.5, 1.5), moving_variance ~ U(0.5, 1.5),
    # beta and moving_mean ~ N(0, 0.1); meta.json counts the BN layers.
    tensors = read_all(name)
    counts = json.loads((require_parity_dir() / name / "meta.json").read_text())["randomization"]["counts"]
    for stat in ("gamma", "moving_variance"):
        keys = [k for k in tensors if k.split("/.ATTRIBUTES")[0].endswith("/" + stat)]
        assert len(keys) == counts[stat], stat
        values = np.concatenate([np.ravel(tensors[k]) for k in keys])
        assert values.min() >= 0.5 and values.max() <= 1.5, stat
        assert abs(values.mean() - 1.0) < 0.05, stat  # thousands of U(0.5, 1.5) draws
    for stat in ("beta", "moving_mean"):
        keys = [k for k in tensors if k.split("/.ATTRIBUTES")[0].endswith("/" + stat)]
        assert len(keys) == counts[stat], stat
        values = np.concatenate([np.ravel(tensors[k]) for k in keys])
        assert abs(values.mean()) < 0.02 and 0.08 < values.std() < 0.12, stat


@pytest.mark.parametrize("name", FIXTURES)
def test_object_graph_names(name: str) -> None:
    ckpt = TFCheckpoint(fixture_prefix(name))
    names = object_graph_names(ckpt)
    rows = read_keys_tsv(name)
    if name.startswith("tpu_"):  # TF1 name-based checkpoint: no object graph
        assert OBJECT_GRAPH not in ckpt
        assert names == {}
        return
    # Every variable is named; the graph itself is not a variable.
    assert set(names) == set(ckpt.keys()) - {OBJECT_GRAPH}
    # keys.tsv's 4th column is the Keras variable name, i.e. full_name + ":0".
    keras_rows = [(key, fourth) for key, _, _, fourth in rows if fourth]
    assert len(keras_rows) == len(rows) - 2  # all but the object graph and global_step
    for key, keras_name in keras_rows:
        assert names[key] + ":0" == keras_name, key
    assert names["global_step/.ATTRIBUTES/VARIABLE_VALUE"] == "global_step"
    # Accepts a prefix too.
    assert object_graph_names(fixture_prefix(name)) == names


def test_prefix_forms_and_key_errors() -> None:
    prefix = fixture_prefix("tpu_spinenet49_tiny_backbone")
    from_str = TFCheckpoint(str(prefix))
    from_path = TFCheckpoint(prefix)
    from_index = TFCheckpoint(str(prefix) + ".index")
    assert from_str.keys() == from_path.keys() == from_index.keys()
    assert from_index.prefix == str(prefix)
    assert list(from_str) == from_str.keys()
    with pytest.raises(KeyError, match="spinenet/conv2d/kernel"):  # suggested close match
        from_str.read("spinenet/conv2d/kernal")
    with pytest.raises(KeyError, match="not in checkpoint"):
        from_str.shape("no such thing at all")
    assert "nothing" not in from_str


# --------------------------------------------------------------------------- #
# Damaged copies of a real checkpoint
# --------------------------------------------------------------------------- #

DAMAGE_SOURCE = "mg_spinenet49_tiny_backbone"


def copy_checkpoint(tmp_path: Path, name: str = DAMAGE_SOURCE) -> Path:
    src = fixture_prefix(name)
    for f in src.parent.glob(src.name + ".*"):
        shutil.copyfile(f, tmp_path / f.name)  # copyfile: the copies must be writable
    return tmp_path / src.name


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x5A
    path.write_bytes(bytes(data))


def test_corrupted_tensor_raises_value_error_naming_key(tmp_path: Path) -> None:
    prefix = copy_checkpoint(tmp_path)
    shard = Path(str(prefix) + ".data-00000-of-00001")
    flip_byte(shard, shard.stat().st_size // 2)
    ckpt = TFCheckpoint(prefix)
    failed = {}
    for key in ckpt:
        try:
            ckpt.read(key)
        except ValueError as err:
            failed[key] = str(err)
    assert len(failed) == 1, failed
    [(key, message)] = failed.items()
    assert repr(key) in message and shard.name in message and "checksum" in message
    # Without verification the damaged values come through, differing in one element.
    damaged = ckpt.read(key, verify=False)
    original = read_all(DAMAGE_SOURCE)[key]
    assert np.count_nonzero(damaged != original) == 1
    assert isinstance(TFCheckpoint(prefix, verify=False).read(key), np.ndarray)


def test_corrupted_string_tensor_raises(tmp_path: Path) -> None:
    # The object graph is the last tensor in the shard.
    prefix = copy_checkpoint(tmp_path)
    shard = Path(str(prefix) + ".data-00000-of-00001")
    flip_byte(shard, shard.stat().st_size - 10)
    ckpt = TFCheckpoint(prefix)
    with pytest.raises(ValueError, match=OBJECT_GRAPH):
        ckpt.read(OBJECT_GRAPH)
    assert ckpt.read(OBJECT_GRAPH, verify=False) != read_all(DAMAGE_SOURCE)[OBJECT_GRAPH]


def test_missing_files_raise_file_not_found(tmp_path: Path) -> None:
    prefix = copy_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nope\.index"):
        TFCheckpoint(tmp_path / "nope")
    Path(str(prefix) + ".data-00000-of-00001").unlink()
    with pytest.raises(FileNotFoundError, match=r"ckpt\.data-00000-of-00001"):
        TFCheckpoint(prefix)


@pytest.mark.parametrize("keep", [0, 20, 1000, -1])
def test_truncated_index_raises_value_error(tmp_path: Path, keep: int) -> None:
    prefix = copy_checkpoint(tmp_path)
    index = Path(str(prefix) + ".index")
    data = index.read_bytes()
    index.write_bytes(data[:keep])
    with pytest.raises(ValueError, match=r"ckpt\.index"):
        TFCheckpoint(prefix)


def test_corrupted_index_block_raises_value_error(tmp_path: Path) -> None:
    prefix = copy_checkpoint(tmp_path)
    index = Path(str(prefix) + ".index")
    flip_byte(index, index.stat().st_size // 2)
    with pytest.raises(CheckpointFormatError, match="checksum"):
        TFCheckpoint(prefix)


# --------------------------------------------------------------------------- #
# Synthetic bundles: dtypes, byte order and table features the fixtures lack
# --------------------------------------------------------------------------- #

DT = {"float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6, "string": 7,
      "int64": 9, "bool": 10, "bfloat16": 14, "float16": 19, "variant": 21}  # fmt: skip


def test_synthetic_numeric_dtypes(tmp_path: Path) -> None:
    f32 = np.array([[1.0, -2.5, 3.140625], [0.0, -0.0, 1e-3]], dtype=np.float32)
    tensors = {
        "a/float16": np.array([0.5, -1.25, 65504.0], dtype=np.float16),
        "a/float64": np.array([np.pi, -1e300], dtype=np.float64),
        "b/int8": np.array([-128, 0, 127], dtype=np.int8),
        "b/int16": np.array([[-32768], [32767]], dtype=np.int16),
        "b/int32": np.array(7, dtype=np.int32),
        "b/int64": np.array([-(2**62), 2**62], dtype=np.int64),
        "b/uint8": np.arange(250, 256, dtype=np.uint8),
        "c/bool": np.array([True, False, True]),
        "c/empty": np.zeros((0, 3), dtype=np.float32),
        "c/float32": f32,
    }
    entries = {key: _numeric_entry(value) for key, value in tensors.items()}
    # bfloat16 = the top 16 bits of a float32 (these values are exact in bfloat16 except 1e-3).
    bf16_bits = (f32.view(np.uint32) >> 16).astype("<u2")
    entries["c/bfloat16"] = (DT["bfloat16"], f32.shape, bf16_bits.tobytes())
    entries["d/variant"] = (DT["variant"], (), b"")
    prefix = write_bundle(tmp_path / "synth", entries)

    ckpt = TFCheckpoint(prefix)
    assert ckpt.keys() == sorted(entries)
    for key, value in tensors.items():
        out = ckpt.read(key)
        assert out.dtype == value.dtype and out.shape == value.shape, key
        np.testing.assert_array_equal(out, value)
        assert ckpt.tf_dtype(key) == (key.split("/")[1] if key != "c/empty" else "float32")
    bf16 = ckpt.read("c/bfloat16")
    assert ckpt.tf_dtype("c/bfloat16") == "bfloat16" and ckpt.dtype("c/bfloat16") == np.float32
    assert bf16.dtype == np.float32
    np.testing.assert_array_equal(bf16.ravel()[:5], [1.0, -2.5, 3.140625, 0.0, -0.0])
    assert np.signbit(bf16.ravel()[4])
    assert abs(bf16.ravel()[5] - 1e-3) < 1e-5 and bf16.ravel()[5] != np.float32(1e-3)
    # Unsupported dtypes are listed but skipped by items()/as_dict() and refused by read().
    assert "d/variant" in ckpt and "d/variant" not in ckpt.as_dict()
    with pytest.raises(NotImplementedError, match="variant"):
        ckpt.read("d/variant")


def test_synthetic_big_endian_bundle(tmp_path: Path) -> None:
    values = {"x": np.array([1.5, -2.0], dtype=">f4"), "y": np.array([[1, -(2**40)]], dtype=">i8")}
    entries = {key: _numeric_entry(value) for key, value in values.items()}
    prefix = write_bundle(tmp_path / "be", entries, big_endian=True)
    ckpt = TFCheckpoint(prefix)
    for key, value in values.items():
        out = ckpt.read(key)
        assert out.dtype.isnative
        np.testing.assert_array_equal(out, value)


def test_synthetic_string_tensors(tmp_path: Path) -> None:
    strings = [b"ab", b"", b"x" * 200, "\u00e9".encode()]  # 200 needs a 2-byte varint length
    entries = {
        "s/scalar": _string_entry([b"hello"], ()),
        "s/vector": _string_entry(strings, (4,)),
        "s/matrix": _string_entry(strings, (2, 2)),
    }
    ckpt = TFCheckpoint(write_bundle(tmp_path / "str", entries))
    assert ckpt.read("s/scalar") == b"hello"
    vector = ckpt.read("s/vector")
    assert vector.dtype == object and vector.shape == (4,) and list(vector) == strings
    assert ckpt.read("s/matrix").tolist() == [strings[:2], strings[2:]]
    assert ckpt.dtype("s/vector") == np.dtype(object)
    assert ckpt.as_dict() == {}  # no numeric tensors


def test_synthetic_many_keys_across_blocks(tmp_path: Path) -> None:
    # Many long, shared-prefix keys over several data blocks exercise the prefix
    # decompression and the index block (the fixtures use a few blocks only).
    entries = {
        f"model/layer_with_weights-{i}/kernel/.ATTRIBUTES/VARIABLE_VALUE": _numeric_entry(
            np.full((2,), i, dtype=np.float32)
        )
        for i in range(300)
    }
    ckpt = TFCheckpoint(write_bundle(tmp_path / "many", entries, keys_per_block=37, restart_interval=5))
    assert ckpt.keys() == sorted(entries)
    for i in (0, 123, 299):
        key = f"model/layer_with_weights-{i}/kernel/.ATTRIBUTES/VARIABLE_VALUE"
        np.testing.assert_array_equal(ckpt.read(key), [i, i])


def test_snappy_compressed_index_is_refused(tmp_path: Path) -> None:
    prefix = write_bundle(tmp_path / "snappy", {"x": _numeric_entry(np.ones(2, np.float32))}, compression=1)
    with pytest.raises(ValueError, match="snappy"):
        TFCheckpoint(prefix)


# -- a minimal tensor-bundle writer (test-only) ------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb_int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _pb_bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _pb_fixed32(field: int, value: int) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<I", value)


def _numeric_entry(value: np.ndarray) -> tuple[int, tuple[int, ...], bytes]:
    name = "bool" if value.dtype == np.bool_ else value.dtype.newbyteorder("=").name
    return DT[name], value.shape, value.tobytes()


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _string_entry(strings: list[bytes], shape: tuple[int, ...]) -> tuple[int, tuple[int, ...], bytes, int]:
    # TF's layout, with its checksum quirk: lengths are checksummed as uint32, stored as varints.
    lengths_crc = crc32c(b"".join(struct.pack("<I", len(s)) for s in strings))
    length_checksum = struct.pack("<I", _mask(lengths_crc))
    payload = b"".join(_varint(len(s)) for s in strings) + length_checksum + b"".join(strings)
    entry_crc = _mask(crc32c(length_checksum + b"".join(strings), lengths_crc))
    return DT["string"], shape, payload, entry_crc


def _block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out = bytearray()
    restarts = []
    previous = b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
        out += key[shared:] + value
        previous = key
    restarts = restarts or [0]
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def write_bundle(
    prefix: Path,
    tensors: dict[str, tuple],
    *,
    big_endian: bool = False,
    keys_per_block: int = 1000,
    restart_interval: int = 16,
    compression: int = 0,
) -> Path:
    """Write ``{key: (dtype enum, shape, payload[, masked crc])}`` as a one-shard V2 checkpoint."""
    data = bytearray()
    records = [(b"", _pb_int(1, 1) + _pb_int(2, int(big_endian)) + _pb_bytes(3, _pb_int(1, 1)))]
    for key in sorted(tensors):
        dtype, shape, payload, *crc = tensors[key]
        shape_msg = b"".join(_pb_bytes(2, _pb_int(1, d)) for d in shape)
        entry = _pb_int(1, dtype) + _pb_bytes(2, shape_msg) + _pb_int(4, len(data)) + _pb_int(5, len(payload))
        entry += _pb_fixed32(6, crc[0] if crc else masked_crc32c(payload))
        records.append((key.encode(), entry))
        data += payload

    table = bytearray()

    def add_block(contents: bytes, block_compression: int = 0) -> bytes:
        handle = _varint(len(table)) + _varint(len(contents))
        trailer_type = bytes([block_compression])
        table.extend(contents + trailer_type + struct.pack("<I", masked_crc32c(contents + trailer_type)))
        return handle

    index_entries = []
    for start in range(0, len(records), keys_per_block):
        chunk = records[start : start + keys_per_block]
        index_entries.append((chunk[-1][0], add_block(_block(chunk, restart_interval), compression)))
    metaindex = add_block(_block([], restart_interval))
    index = add_block(_block(index_entries, 1))
    footer = (metaindex + index).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    table += footer

    Path(str(prefix) + ".index").write_bytes(bytes(table))
    Path(str(prefix) + ".data-00000-of-00001").write_bytes(bytes(data))
    return prefix
