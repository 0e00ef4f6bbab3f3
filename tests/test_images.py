"""Bad-input corpus for images.load_rgb, written as real files (docs/reliability.md §12)."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from latentstore.errors import InputError
from latentstore.build.images import BACKGROUND, RejectedImage, load_rgb


def _png(path, width, height, color_type, bit_depth, raw=b""):
    """Write a PNG by hand: Pillow cannot write 16-bit RGB or lie about its size."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


def _reason(path):
    with pytest.raises(RejectedImage) as e:
        load_rgb(path)
    return e.value.reason


def _pixels(path):
    img = load_rgb(path)
    assert img.mode == "RGB"
    return np.asarray(img)


def test_rgb_jpeg_is_returned_fully_loaded(tmp_path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (32, 16), (10, 200, 30)).save(path, quality=95)
    img = load_rgb(path)
    path.unlink()  # the pixels must not depend on the file any more
    assert img.size == (32, 16)
    assert np.abs(np.asarray(img).astype(int) - (10, 200, 30)).max() <= 3


def test_truncated_jpeg_is_rejected(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    full = tmp_path / "full.jpg"
    Image.fromarray(noise).save(full, quality=90)
    data = full.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert _reason(cut) == "truncated file"


def test_gray_fill_switch_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(InputError, match="LOAD_TRUNCATED_IMAGES"):
        load_rgb(path)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    assert Image.open(path).mode == "CMYK"
    assert np.abs(_pixels(path).astype(int) - (255, 0, 0)).max() <= 4


def test_16bit_gray_png_is_scaled_not_saturated(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    px = _pixels(path)
    assert px[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()


def test_16bit_rgb_png_is_scaled(tmp_path):
    row = struct.pack(">9H", 0, 32768, 65535, 65535, 0, 32768, 32768, 65535, 0)
    path = _png(tmp_path / "rgb16.png", 3, 1, color_type=2, bit_depth=16, raw=b"\x00" + row)
    assert _pixels(path)[0].tolist() == [[0, 128, 255], [255, 0, 128], [128, 255, 0]]


def test_palette_with_transparency_is_composited_on_background(tmp_path):
    path = tmp_path / "p.png"
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.save(path, transparency=0)
    assert _pixels(path)[0].tolist() == [list(BACKGROUND), [255, 0, 0]]


def test_rgba_is_composited_on_white(tmp_path):
    path = tmp_path / "rgba.png"
    img = Image.new("RGBA", (3, 1))
    img.putdata([(0, 255, 0, 0), (0, 0, 0, 255), (0, 0, 0, 128)])  # hidden green, opaque, half
    img.save(path)
    px = _pixels(path)[0].astype(int)
    assert BACKGROUND == (255, 255, 255)
    assert px[0].tolist() == [255, 255, 255]
    assert px[1].tolist() == [0, 0, 0]
    assert np.abs(px[2] - 127).max() <= 1


def test_la_is_composited(tmp_path):
    path = tmp_path / "la.png"
    img = Image.new("LA", (2, 1))
    img.putdata([(0, 0), (100, 255)])
    img.save(path)
    assert _pixels(path)[0].tolist() == [[255, 255, 255], [100, 100, 100]]


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "l.png"
    Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), "L").save(path)
    assert _pixels(path)[0].tolist() == [[0, 0, 0], [77, 77, 77], [255, 255, 255]]


def test_exif_orientation_6_is_applied(tmp_path):
    # Stored 40x20: left half red, right half blue. Orientation 6 = rotate 90°
    # clockwise to display, so the shown image is 20x40 with red on top.
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    px = _pixels(path).astype(int)
    assert px.shape == (40, 20, 3)
    assert np.abs(px[5, 10] - (255, 0, 0)).max() <= 8
    assert np.abs(px[35, 10] - (0, 0, 255)).max() <= 8


def test_one_pixel_image_is_fine(tmp_path):
    path = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (1, 2, 3)).save(path)
    assert _pixels(path).tolist() == [[[1, 2, 3]]]


@pytest.mark.parametrize("limit", [3000, 1000])  # 4096 px: Pillow warns at >1x, raises at >2x
def test_decompression_bomb_under_a_low_limit(tmp_path, monkeypatch, limit):
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    assert _reason(path) == f"decompression bomb (4096 > limit {limit} pixels)"


def test_decompression_bomb_header_is_rejected_without_decoding(tmp_path):
    # A 100k x 100k PNG header with no real data: must be refused at the default limit.
    path = _png(tmp_path / "bomb.png", 100_000, 100_000, color_type=2, bit_depth=8)
    assert _reason(path).startswith("decompression bomb (10000000000 > limit")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert _reason(path) == "empty file"


def test_text_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    assert _reason(path) == "not an image"


def test_missing_file_is_a_reject_not_a_crash(tmp_path):
    assert _reason(tmp_path / "gone.jpg").startswith("unreadable")


def test_reject_is_an_input_error_that_names_the_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty.png: empty file"):
        load_rgb(path)


def test_an_image_over_the_memory_budget_is_rejected_before_decoding(tmp_path, monkeypatch):
    from PIL import Image

    from latentstore.build.images import RejectedImage, load_rgb

    path = tmp_path / "wide.png"
    Image.new("RGB", (1200, 1000), (10, 20, 30)).save(path)  # 1.2 M px: tiny file, big decode
    monkeypatch.setenv("LATENTSTORE_MAX_IMAGE_PIXELS", "1000000")
    with pytest.raises(RejectedImage, match=r"1200x1000 is over the memory budget of 1000000 pixels"):
        load_rgb(path)
    monkeypatch.setenv("LATENTSTORE_MAX_IMAGE_PIXELS", "2000000")
    assert load_rgb(path).size == (1200, 1000)


def test_the_default_budget_rejects_a_9000_px_square_png(tmp_path):
    from PIL import Image

    from latentstore.build.images import RejectedImage, load_rgb

    path = tmp_path / "big.png"
    Image.new("1", (9000, 9000)).save(path)  # 1-bit: a few MB to make, ~28 kB on disk
    with pytest.raises(RejectedImage, match="over the memory budget"):
        load_rgb(path)
