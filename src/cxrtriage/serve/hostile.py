"""Hostile uploads for the security tests and the memory benchmark: decompression bombs and malformed DICOM.

Every builder returns the bytes of one file, made without allocating the
decoded image (PNG bombs are written row by row through ``zlib``), so a test
can send a 400 MB bomb while using a few MB itself.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

__all__ = [
    "png_bomb",
    "dicom_bytes",
    "dicom_deflate_bomb",
    "dicom_corrupt_deflate",
    "dicom_bad_number_of_frames",
    "dicom_deep_sequence",
    "dicom_with",
]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, mode: str = "RGB") -> bytes:
    """A valid PNG of ``width x height`` black pixels, compressed row by row (tiny file, huge image).

    Parameters
    ----------
    width, height : int
        Pixels.
    mode : {"RGB", "L", "I;16"}
        8-bit RGB, 8-bit gray or 16-bit gray.

    Returns
    -------
    bytes
        About 1 KB per 1 MB of decoded samples.
    """
    colour_type, bit_depth, bpp = {"RGB": (2, 8, 3), "L": (0, 8, 1), "I;16": (0, 16, 2)}[mode]
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + width * bpp)  # filter type 0 + samples
    parts = []
    block = row * max(1, (1 << 20) // len(row))
    rows_per_block = len(block) // len(row)
    left = height
    while left > 0:
        n = min(left, rows_per_block)
        parts.append(comp.compress(block if n == rows_per_block else row * n))
        left -= n
    parts.append(comp.flush())
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def dicom_with(image: np.ndarray | None = None, transfer_syntax: str | None = None, **attrs: object) -> bytes:
    """A small DX DICOM (``cxrtriage.data.dicom.write_dicom``) with extra or replaced attributes (by keyword).

    Values are written without validation, so invalid ones (``NumberOfFrames="abcd"``) can be made.
    """
    import pydicom
    from pydicom import config

    from cxrtriage.data.dicom import write_dicom

    img = image if image is not None else np.tile(np.arange(64, dtype=np.uint16) * 64, (64, 1))
    buf = io.BytesIO()
    write_dicom(buf, img, patient_name="DOE^JANE", patient_id="ID-98765")  # type: ignore[arg-type]
    ds = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    old = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        for k, v in attrs.items():
            setattr(ds, k, v)
        if transfer_syntax:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(transfer_syntax)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
    finally:
        config.settings.writing_validation_mode = old
    return out.getvalue()


def dicom_bytes(image: np.ndarray, **kw: object) -> bytes:
    """``write_dicom`` into bytes (see :func:`cxrtriage.data.dicom.write_dicom` for ``kw``)."""
    from cxrtriage.data.dicom import write_dicom

    buf = io.BytesIO()
    write_dicom(buf, image, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


_DEFLATED = "1.2.840.10008.1.2.1.99"


def _meta_end(data: bytes) -> int:
    (group_len,) = struct.unpack_from("<I", data, 132 + 8)
    return 132 + 12 + group_len


def dicom_deflate_bomb(side: int = 14_000, seed: int | None = None) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM whose data set inflates to about ``2 * side**2`` bytes.

    The data set of a small DX file is re-encoded with ``Rows = Columns = side``
    and ``side**2`` 16-bit zero pixels, deflated as a stream (the default side
    inflates to 392 MB from about 400 KB). With ``seed``, the first 4096 pixels
    are random 12-bit values (a decodable, non-constant image).
    """
    small = dicom_with(Rows=side, Columns=side)
    end = _meta_end(small)
    body = small[end:]
    pix = body.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) PixelData
    head = body[:pix]
    n = 2 * side * side
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [comp.compress(head + b"\xe0\x7f\x10\x00OW\0\0" + struct.pack("<I", n))]
    left = n
    if seed is not None:
        noise = np.random.default_rng(seed).integers(0, 4096, min(4096, side * side), dtype=np.uint16).tobytes()
        parts.append(comp.compress(noise))
        left -= len(noise)
    block = b"\0" * (1 << 20)
    while left > 0:
        k = min(left, len(block))
        parts.append(comp.compress(block[:k]))
        left -= k
    parts.append(comp.flush())
    # the transfer syntax UID is 2 bytes longer: _fix_meta rewrites its length and the group length
    return _fix_meta(small[:end]) + b"".join(parts)


def _fix_meta(meta: bytes) -> bytes:
    """Rewrite the TransferSyntaxUID element length and the file meta group length after a UID change."""
    out = bytearray(meta[:132])
    pos = 132
    elems = []
    while pos < len(meta):
        tag = meta[pos : pos + 4]
        vr = meta[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC"):
            (ln,) = struct.unpack_from("<I", meta, pos + 8)
            hdr = 12
        else:
            (ln,) = struct.unpack_from("<H", meta, pos + 6)
            hdr = 8
        value = meta[pos + hdr : pos + hdr + ln]
        if tag == b"\x02\x00\x10\x00":  # TransferSyntaxUID
            value = _DEFLATED.encode() if b"1.2.840.10008.1.2.1" in value else value
            value += b"\0" * (len(value) % 2)
        elems.append((tag, vr, hdr, value))
        pos += hdr + ln
    body = bytearray()
    for tag, vr, hdr, value in elems[1:]:
        body += tag + vr + (b"\0\0" + struct.pack("<I", len(value)) if hdr == 12 else struct.pack("<H", len(value)))
        body += value
    out += b"\x02\x00\x00\x00UL" + struct.pack("<H", 4) + struct.pack("<I", len(body)) + body
    return bytes(out)


def dicom_corrupt_deflate() -> bytes:
    """A Deflated-transfer-syntax DICOM whose deflate stream is garbage (``zlib.error`` when inflated)."""
    small = dicom_with()
    end = _meta_end(small)
    meta = _fix_meta(small[:end])
    return meta + b"\xff\xfe\xfd not a deflate stream " * 50


def dicom_bad_number_of_frames() -> bytes:
    """A DX DICOM with ``NumberOfFrames = "abcd"`` (an IS that is not an integer; pydicom cannot write it)."""
    data = dicom_with(NumberOfFrames="1111")
    elem = b"\x28\x00\x08\x00IS\x04\x00"  # (0028,0008) IS, 4 bytes
    assert data.count(elem + b"1111") == 1
    return data.replace(elem + b"1111", elem + b"abcd")


def dicom_deep_sequence(depth: int = 20_000) -> bytes:
    """A DX DICOM with a sequence nested ``depth`` deep (undefined lengths) appended to its data set."""
    small = dicom_with()
    sq = b"\x08\x00\x15\x11SQ\0\0\xff\xff\xff\xff"  # (0008,1115) ReferencedSeriesSequence, undefined length
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"  # item, undefined length
    item_end = b"\xfe\xff\x0d\xe0\0\0\0\0"
    seq_end = b"\xfe\xff\xdd\xe0\0\0\0\0"
    return small + (sq + item) * depth + (item_end + seq_end) * depth
