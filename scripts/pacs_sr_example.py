"""Regenerate the SR example of docs/pacs.md: a real analysis, its SR as DCMTK's ``dsrdump`` renders it.

A shipped example chest radiograph (Kermany et al. 2018, CC BY 4.0) is written as a DX DICOM file with a
made-up patient, analysed by every shipped model (as ``cxr listen`` without ``--model``) through the listener's code path
(``StudyService.predict`` then ``cxrtriage.serve.interop.result_objects``), and the SR that ``cxr listen``
would send is dumped with ``dsrdump`` (Debian ``dcmtk``) between the markers of docs/pacs.md.

Usage::

    python scripts/pacs_sr_example.py
"""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
from pathlib import Path

import pydicom

from cxrtriage.data.io import read_image
from cxrtriage.pacs.testing import dx_bytes
from cxrtriage.report.dicom_out import source_header
from cxrtriage.serve.interop import result_objects
from cxrtriage.serve.service import StudyService
from cxrtriage.serve.settings import ServeSettings

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "pacs.md"
EXAMPLE = REPO / "src" / "cxrtriage" / "examples" / "PNEUMONIA_person1158_virus_1941.jpg"
START, END = "<!-- dsrdump:start -->", "<!-- dsrdump:end -->"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = dx_bytes(read_image(EXAMPLE), "Example^Patient", "EX-0001")
        service = StudyService(ServeSettings(model_dir=None, data_dir=Path(tmp), threads=1))  # every shipped model
        rec, _, _ = service.predict(data, EXAMPLE.name)
        header = source_header(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
        sr = next(o for o in result_objects(service, rec, header) if o.kind == "sr")
        path = Path(tmp) / "sr.dcm"
        path.write_bytes(sr.data)
        dump = subprocess.run(["dsrdump", "+Pl", str(path)], capture_output=True, text=True, check=True).stdout
        service.store.close()
    dump = "\n".join(line.rstrip() for line in dump.splitlines()).strip()
    text = PAGE.read_text()
    block = f"{START}\n```text\n$ dsrdump +Pl sr.dcm\n{dump}\n```\n{END}"
    PAGE.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S))
    print(f"updated {PAGE.relative_to(REPO)} ({len(dump.splitlines())} lines of dsrdump output)")


if __name__ == "__main__":
    main()
