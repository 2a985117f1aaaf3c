"""A throw-away Orthanc PACS on loopback, for the tests and the benchmark (Debian ``orthanc``, ``orthanc-dicomweb``).

Orthanc (https://www.orthanc-server.com) is started as a subprocess with a
generated JSON configuration: its own storage folder, a DICOM port and an HTTP
port on 127.0.0.1, no HTTP authentication (loopback only), the DICOMweb plugin
when installed, and the cxrtriage listener as a known DICOM modality, so the
REST call ``POST /modalities/{name}/store`` forwards instances to it.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from cxrtriage.data.dicom import write_dicom

__all__ = [
    "ORTHANC_BINARY",
    "DICOMWEB_PLUGIN",
    "AUTO_ROUTING_LUA",
    "OrthancServer",
    "dx_bytes",
    "find_orthanc",
    "orthanc_config",
]

#: Orthanc Lua script forwarding every received CR or DX instance to the modality ``cxr`` (auto-routing);
#: the SR and Secondary Capture results (Modality SR, OT) stay where they are.
AUTO_ROUTING_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  if tags['Modality'] == 'CR' or tags['Modality'] == 'DX' then
    SendToModality(instanceId, 'cxr')
  end
end
"""

#: Where Debian installs the Orthanc server and its DICOMweb plugin.
ORTHANC_BINARY = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def dx_bytes(img: np.ndarray, patient_name: str = "Doe^Jane", patient_id: str = "PAT-001", **kw: Any) -> bytes:
    """A DX DICOM file of an 8-bit image as a modality would send it: 12 bits stored in 16, a window, identifiers.

    Parameters
    ----------
    img : numpy.ndarray
        ``uint8 (H, W)`` grayscale radiograph.
    patient_name, patient_id : str
        Patient identifiers written into the file (made up).
    **kw
        Further options of :func:`cxrtriage.data.dicom.write_dicom`.

    Returns
    -------
    bytes
        DICOM Part 10 file (Explicit VR Little Endian), new Study/Series/SOP Instance UIDs.
    """
    buf: Any = io.BytesIO()  # write_dicom takes a path or a file-like object
    write_dicom(
        buf,
        img.astype(np.uint16) * 16,
        bits=16,
        window=(2048, 4096),
        patient_name=patient_name,
        patient_id=patient_id,
        **kw,
    )
    return buf.getvalue()


def find_orthanc() -> str | None:
    """Path of the ``Orthanc`` executable (PATH, then Debian's /usr/sbin), or None."""
    found = shutil.which("Orthanc")
    if found:
        return found
    return ORTHANC_BINARY if Path(ORTHANC_BINARY).is_file() else None


def orthanc_config(
    root: Path,
    http_port: int,
    dicom_port: int,
    aet: str,
    modalities: dict[str, tuple[str, str, int]],
    concurrent_jobs: int = 2,
    lua_scripts: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Orthanc configuration (the JSON of its ``--config`` file) for a loopback test PACS.

    Parameters
    ----------
    root : pathlib.Path
        Folder of the storage and index.
    http_port, dicom_port : int
        Loopback ports of the REST API and of the DICOM server.
    aet : str
        Orthanc's AE title.
    modalities : dict of str to (AE title, host, port)
        Known DICOM peers (``DicomModalities``), e.g. ``{"cxr": ("CXRTRIAGE", "127.0.0.1", 11112)}``.
    concurrent_jobs : int
        Jobs Orthanc runs at once (``ConcurrentJobs``): each synchronous ``/modalities/{name}/store`` is one
        job on one association.
    lua_scripts : tuple of str
        Paths of Lua scripts (``LuaScripts``), e.g. one holding :data:`AUTO_ROUTING_LUA`.
    """
    cfg: dict[str, Any] = {
        "Name": "cxrtriage-test-pacs",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "DicomModalities": {k: list(v) for k, v in modalities.items()},
        "DicomScuTimeout": 30,
        "DicomAssociationCloseDelay": 0,
        "StableAge": 1,
        "ConcurrentJobs": concurrent_jobs,
        "HttpThreadsCount": 8,
        "SaveJobs": False,
        "Plugins": [],
        "LuaScripts": list(lua_scripts),
    }
    if Path(DICOMWEB_PLUGIN).is_file():
        cfg["Plugins"] = [DICOMWEB_PLUGIN]
        cfg["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
    return cfg


class OrthancServer:
    """An Orthanc subprocess on 127.0.0.1 (start, stop, start again on the same storage) with REST helpers.

    Parameters
    ----------
    root : pathlib.Path
        Folder of its configuration, storage and log.
    http_port, dicom_port : int
    aet : str
        Orthanc's AE title.
    modalities : dict of str to (AE title, host, port)
        See :func:`orthanc_config`.
    binary : str, optional
        The executable (default :func:`find_orthanc`).
    concurrent_jobs : int
        See :func:`orthanc_config`.
    auto_route : bool
        Forward every stored CR/DX instance to the modality ``cxr`` (:data:`AUTO_ROUTING_LUA`).
    """

    def __init__(
        self,
        root: Path,
        http_port: int,
        dicom_port: int,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
        binary: str | None = None,
        concurrent_jobs: int = 2,
        auto_route: bool = False,
    ) -> None:
        self.root, self.http_port, self.dicom_port, self.aet = Path(root), http_port, dicom_port, aet
        self.binary = binary or find_orthanc()
        if self.binary is None:
            raise FileNotFoundError("Orthanc not found (Debian: apt-get install orthanc orthanc-dicomweb)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path = self.root / "orthanc.json"
        lua: tuple[str, ...] = ()
        if auto_route:
            (self.root / "auto-routing.lua").write_text(AUTO_ROUTING_LUA)
            lua = (str(self.root / "auto-routing.lua"),)
        cfg = orthanc_config(self.root, http_port, dicom_port, aet, modalities or {}, concurrent_jobs, lua)
        self.config_path.write_text(json.dumps(cfg, indent=2))
        self.log_path = self.root / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start Orthanc and wait until its REST API answers.

        Raises
        ------
        RuntimeError
            Orthanc exited or did not answer within ``timeout`` seconds (the message holds its log's tail).
        """
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(self.binary), str(self.config_path)], stdout=log, stderr=log, cwd=self.root)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                self.get("/system")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"Orthanc did not start on 127.0.0.1:{self.http_port}:\n{tail}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    # -- REST -------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> bytes:
        """One REST call; the response body. :class:`urllib.error.HTTPError` on a 4xx/5xx answer."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.read()

    def get(self, path: str) -> Any:
        """``GET path`` as JSON."""
        return json.loads(self.request("GET", path))

    def post(self, path: str, body: bytes | dict | str, ctype: str = "application/json") -> Any:
        """``POST path`` (bytes as they are, a dict as JSON, text as it is) as JSON."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
        out = self.request("POST", path, data, ctype)
        return json.loads(out) if out.strip() else None

    def upload(self, dicom: bytes) -> dict[str, Any]:
        """Store a DICOM file (``POST /instances``); Orthanc's answer (``ID``, ``ParentStudy``...)."""
        return self.post("/instances", dicom, "application/dicom")

    def send_to(self, modality: str, instance_ids: list[str]) -> Any:
        """Forward instances to a known modality by C-STORE (``POST /modalities/{modality}/store``, synchronous)."""
        return self.post(f"/modalities/{modality}/store", {"Resources": instance_ids, "Synchronous": True})

    def series_of_study(self, study_id: str) -> list[dict[str, Any]]:
        """The series of an Orthanc study (``GET /studies/{id}/series``)."""
        return self.get(f"/studies/{study_id}/series")

    def instance_file(self, instance_id: str) -> bytes:
        """The DICOM file of an instance (``GET /instances/{id}/file``)."""
        return self.request("GET", f"/instances/{instance_id}/file")
