"""Image decoding: every PNG/JPEG flavour to one grayscale array; clear errors for bad files."""

import io

import numpy as np
import pytest
from PIL import Image

from cxrtriage.data.io import ImageReadError, decode_image, read_image


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def cxr(example_paths) -> np.ndarray:
    return np.asarray(Image.open(example_paths[0]).convert("L"))


def test_reads_real_jpeg(example_paths):
    img = read_image(example_paths[0])
    assert img.dtype == np.uint8 and img.shape == (224, 224)
    assert img.std() > 10  # a real radiograph, not a blank


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P"])
def test_png_modes_give_the_same_gray(cxr, mode):
    src = Image.fromarray(cxr)
    converted = src.convert(mode) if mode != "LA" else Image.merge("LA", [src, Image.new("L", src.size, 128)])
    out = decode_image(_encode(converted, "PNG"), "x.png")
    assert out.shape == cxr.shape
    assert (
        np.abs(out.astype(int) - cxr.astype(int)).max() <= 2
        if mode != "P"
        else np.corrcoef(out.ravel(), cxr.ravel())[0, 1] > 0.99
    )


def test_16bit_png_is_stretched_to_8bit(cxr):
    twelve_bit = (cxr.astype(np.uint16) * 16).astype(np.uint16)  # 12-bit data in a 16-bit container
    data = _encode(Image.fromarray(twelve_bit), "PNG")
    out = decode_image(data, "x16.png")
    assert out.dtype == np.uint8 and out.max() == 255
    assert np.corrcoef(out.ravel(), cxr.ravel())[0, 1] > 0.999


def test_cmyk_jpeg(cxr):
    data = _encode(Image.fromarray(cxr).convert("CMYK"), "JPEG", quality=95)
    out = decode_image(data, "cmyk.jpg")
    assert np.corrcoef(out.ravel(), cxr.ravel())[0, 1] > 0.95


def test_truncated_jpeg_is_refused_with_reason(example_paths, tmp_path):
    data = example_paths[0].read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as err:
        read_image(bad)
    assert str(bad) in str(err.value) and "truncated" in err.value.reason


def test_zero_byte_and_text_files(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    with pytest.raises(ImageReadError, match="empty file"):
        read_image(empty)
    with pytest.raises(ImageReadError, match="not a readable PNG or JPEG"):
        read_image(text)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.png")


def test_decompression_bomb_guard(cxr):
    data = _encode(Image.fromarray(cxr), "PNG")
    with pytest.raises(ImageReadError, match="too large"):
        decode_image(data, "big.png", max_pixels=10_000)


def test_non_png_jpeg_format_refused(cxr):
    with pytest.raises(ImageReadError, match="unsupported image format"):
        decode_image(_encode(Image.fromarray(cxr), "GIF"), "x.gif")
