import numpy as np
import pytest

from latentstore.store.format import (Padding, decode_npy, encode_npy, sample_key, shard_name,
                                smallest_int_dtype)


@pytest.mark.parametrize("lo,hi,expected", [
    (-128, 127, np.int8), (-129, 0, np.int16), (0, 128, np.int16),
    (-40000, 5, np.int32), (0, 2**31, np.int64), (0, 0, np.int8),
])
def test_smallest_int_dtype_never_clips(lo, hi, expected):
    a = np.array([lo, hi], dtype=np.int64)
    dt = smallest_int_dtype(a)
    assert dt == np.dtype(expected)
    assert np.array_equal(a.astype(dt).astype(np.int64), a)


def test_224_crop_padded_to_256_has_valid_latent_rows_1_to_14():
    pad = Padding.centered(224, 224)
    assert pad.as_dict() == {"top": 16, "bottom": 16, "left": 16, "right": 16}
    assert pad.valid_region(224, 224) == [1, 15, 1, 15]


def test_odd_sizes_pad_to_multiples_of_64_and_cover_every_pixel():
    pad = Padding.centered(100, 130)
    assert (100 + pad.top + pad.bottom) % 64 == 0 and (130 + pad.left + pad.right) % 64 == 0
    r0, r1, c0, c1 = pad.valid_region(100, 130)
    assert r0 * 16 <= pad.top and r1 * 16 >= pad.top + 100
    assert c0 * 16 <= pad.left and c1 * 16 >= pad.left + 130


def test_npy_round_trip_and_no_pickle():
    a = np.arange(12, dtype=np.float16).reshape(3, 4)
    assert np.array_equal(decode_npy(encode_npy(a)), a)
    with pytest.raises(ValueError):
        encode_npy(np.array([{"a": 1}], dtype=object))


def _saved(a, **kw) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, a, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("a", [
    np.random.default_rng(0).normal(size=(128, 16, 16)).astype(np.float16),   # ŷ
    np.random.default_rng(1).integers(-300, 300, (8, 4, 4)).astype(np.int16),  # symbols
    np.array(7, np.int64), np.zeros((0, 3), np.float32), np.array([True, False]),
    np.arange(6, dtype=">f4").reshape(2, 3),                                   # big-endian
    np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),           # np.load's path
    np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),                           # np.load's path
], ids=["y_hat", "symbols", "0-d", "empty", "bool", "big-endian", "fortran", "structured"])
def test_decode_npy_gives_what_np_load_gives(a):
    import io
    data = _saved(a)
    got, ref = decode_npy(data), np.load(io.BytesIO(data), allow_pickle=False)
    assert got.dtype == ref.dtype and got.shape == ref.shape and np.array_equal(got, ref)
    assert got.flags.writeable and got.flags.c_contiguous == ref.flags.c_contiguous


def test_decode_npy_refuses_pickles_and_truncated_data():
    with pytest.raises(ValueError):                                  # an object array is a pickle
        decode_npy(_saved(np.array([{"a": 1}], dtype=object), allow_pickle=True))
    data = _saved(np.arange(10, dtype=np.float32))
    with pytest.raises(ValueError):                                  # cut inside the data
        decode_npy(data[:-4])


def test_keys_and_shard_names():
    assert sample_key("n01440764_10026", 3) == "n01440764_10026_v003"
    with pytest.raises(ValueError):
        sample_key("a.b", 0)
    assert shard_name("train", 2, 7) == "train/v002-000007.tar"
