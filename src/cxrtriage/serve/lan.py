"""The server's LAN address and its QR code (so a phone can open the upload page)."""

from __future__ import annotations

import io
import socket
import sys
from typing import TextIO

__all__ = ["lan_ip", "public_url", "qr_svg", "qr_terminal"]


def lan_ip(fallback: str = "127.0.0.1") -> str:
    """IPv4 address of the interface that routes to the LAN.

    ``connect`` on a UDP socket only selects a route and a source address; no
    packet is sent. Falls back to ``fallback`` when there is no route.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.254.254.254", 1))
        ip = s.getsockname()[0]
        return ip if ip and not ip.startswith("0.") else fallback
    except OSError:
        return fallback
    finally:
        s.close()


def public_url(host: str, port: int) -> str:
    """URL other devices should use: the LAN address when listening on all interfaces, else ``host``."""
    if host in ("0.0.0.0", "", "::"):
        host = lan_ip()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def qr_svg(url: str) -> str:
    """QR code of ``url`` as an inline SVG document (``qrcode`` package, path image factory)."""
    import qrcode
    import qrcode.image.svg

    img = qrcode.make(url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    buf = io.BytesIO()
    img.save(buf)
    return buf.getvalue().decode("utf-8")


def qr_terminal(url: str, out: TextIO | None = None) -> None:
    """Print ``url`` and its QR code as text blocks to ``out`` (default stdout)."""
    import qrcode

    out = out or sys.stdout
    qr = qrcode.QRCode(border=1)
    qr.add_data(url)
    qr.make(fit=True)
    try:
        qr.print_ascii(out=out, invert=True)
    except UnicodeEncodeError:
        qr.print_tty(out=out) if out.isatty() else None
    print(url, file=out, flush=True)
