"""PACS round trip on loopback: N DX instances through Orthanc -> ``cxr listen`` -> SR + heatmap back to Orthanc.

1. N distinct real chest radiographs (``../shared/data/kermany-pneumonia``; distinct decoded pixels, so
   the study store's de-duplication by pixel hash keeps each one; images gate 1 or the model's
   out-of-population check refuse are skipped and counted) are written as 16-bit DX DICOM files,
   each with its own patient, study, series and instance UIDs, and stored into a fresh Orthanc (REST
   ``POST /instances``; not timed).
2. Timed: Orthanc forwards them to the listener with ``--associations`` synchronous
   ``POST /modalities/cxr/store`` jobs in parallel (one association each, N / associations instances per
   association); the listener analyses each one (decode, gates, model, heatmap, store) and queues its SR
   and heatmap Secondary Capture in the outbox; its sender C-STOREs them back to Orthanc.
3. The clock stops when the outbox is empty; then Orthanc is checked: N studies, N SR series with one
   instance each, N heatmap series with one instance each, no duplicate SOP Instance UID, nothing lost.

Usage::

    python benchmarks/pacs_roundtrip.py [--n 500] [--associations 4] [--out benchmarks/results/pacs.json]

The machine is shared (2 cores): the load average before and after is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from _common import RESULTS, machine, real_cxr_uploads
from cxrtriage.data.dicom import decode_dicom
from cxrtriage.data.io import decode_bytes
from cxrtriage.pacs.listener import Listener
from cxrtriage.pacs.settings import ListenSettings
from cxrtriage.pacs.testing import OrthancServer, dx_bytes
from cxrtriage.serve.service import Engine, StudyService, pixel_sha256
from cxrtriage.serve.settings import ServeSettings
from cxrtriage.serve.testing import free_port

SR = "1.2.840.10008.5.1.4.1.1.88.33"
SC = "1.2.840.10008.5.1.4.1.1.7"


def dx_instances(n: int, engine: Engine) -> tuple[list[bytes], int]:
    """``n`` DX DICOM files of distinct real chest radiographs the gates accept, each its own patient.

    Distinct decoded pixels (so the store's de-duplication by pixel hash keeps each one); images that gate 1
    or the model's out-of-population check would refuse are skipped (their count is returned), so that every
    instance sent is expected to produce one study, one SR and one heatmap.
    """
    out, seen, skipped = [], set(), 0
    for name, data in real_cxr_uploads(3 * n):
        k = len(out)
        dicom = dx_bytes(decode_bytes(data, name), f"Bench^Patient{k:04d}", f"BENCH-{k:04d}")
        img, _ = decode_dicom(dicom)  # the pixels the listener will see
        h = pixel_sha256(img)
        if h in seen:
            continue
        seen.add(h)
        g = engine.gates(img)
        if not g.is_cxr or not any(x.applicable for x in engine.analyze(img, g.population)):
            skipped += 1
            continue
        out.append(dicom)
        if len(out) == n:
            return out, skipped
    raise RuntimeError(f"only {len(out)} distinct accepted images found, {n} asked")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="instances")
    ap.add_argument("--associations", type=int, default=4, help="parallel associations Orthanc -> listener")
    ap.add_argument("--threads", type=int, default=2, help="inference threads of the listener")
    ap.add_argument("--model", action="append", help="model folder (repeat; default: every shipped model)")
    ap.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    ap.add_argument("--out", type=Path, default=RESULTS / "pacs.json")
    a = ap.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    root = Path(tempfile.mkdtemp(prefix="cxr-pacs-bench-"))
    listen_port, dicom_port = free_port(), free_port()
    orthanc = OrthancServer(
        root / "orthanc",
        free_port(),
        dicom_port,
        "ORTHANC",
        {"cxr": ("CXRTRIAGE", "127.0.0.1", listen_port)},
        concurrent_jobs=a.associations,
    )
    # the models of `cxr listen` without --model: every shipped model (or the given ones)
    dirs = tuple(Path(m) for m in a.model or ())
    serve = ServeSettings(model_dir=None, model_dirs=dirs, data_dir=root / "data", threads=a.threads)
    settings = ListenSettings(
        service=serve, port=listen_port, return_to=f"ORTHANC@127.0.0.1:{dicom_port}", retry_base_s=0.5, poll_s=0.5
    )
    service = StudyService(serve)
    print(f"making {a.n} DX instances ...", flush=True)
    files, skipped = dx_instances(a.n, service.engine)
    orthanc.start()
    listener = Listener(settings, service)
    listener.start()
    try:
        ids = [orthanc.upload(f)["ID"] for f in files]
        print(f"{len(ids)} instances in Orthanc; forwarding with {a.associations} associations ...", flush=True)
        chunks = [ids[i :: a.associations] for i in range(a.associations)]
        errors: list[str] = []

        def forward(chunk: list[str]) -> None:
            try:
                orthanc.send_to("cxr", chunk)
            except Exception as exc:  # noqa: BLE001 - reported in the result
                errors.append(f"{exc.__class__.__name__}: {exc}")

        t0 = time.perf_counter()
        threads = [threading.Thread(target=forward, args=(c,)) for c in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_received = time.perf_counter() - t0
        expected = 2 * (listener.received)
        while time.perf_counter() - t0 < a.timeout:
            c = listener.outbox.counts()
            if c.get("sent", 0) >= expected and not c.get("pending"):
                break
            time.sleep(0.2)
        t_done = time.perf_counter() - t0
        counts = listener.outbox.counts()
        stats = orthanc.get("/statistics")
        sops: dict[str, list[str]] = {SR: [], SC: []}
        per_study_ok = 0
        for study in orthanc.get("/studies"):
            kinds: dict[str, int] = {}
            for inst in orthanc.get(f"/studies/{study}/instances"):
                tags = orthanc.get(f"/instances/{inst['ID']}/simplified-tags")
                cls = tags.get("SOPClassUID", "")
                kinds[cls] = kinds.get(cls, 0) + 1
                if cls in sops:
                    sops[cls].append(tags["SOPInstanceUID"])
            per_study_ok += kinds.get(SR) == 1 and kinds.get(SC) == 1
    finally:
        listener.stop()
        listener.service.store.close()
        orthanc.stop()
        shutil.rmtree(root, ignore_errors=True)  # Orthanc's storage and the study store of this run
    result = {
        "what": "Orthanc -> C-STORE (parallel associations) -> cxr listen (decode, gates, model, heatmap, store) "
        "-> outbox -> C-STORE SR + heatmap Secondary Capture -> Orthanc; loopback, one machine",
        "n_instances": a.n,
        "associations": a.associations,
        "listener_inference_threads": a.threads,
        "models": [m.model_name for m in service.engine.models],
        "images_skipped_because_the_gates_refuse_them": skipped,
        "received_ok": listener.received,
        "refused": listener.refused,
        "forward_errors": errors,
        "seconds_until_all_acknowledged": round(t_received, 2),
        "seconds_until_all_results_in_pacs": round(t_done, 2),
        "throughput_instances_per_s": round(a.n / t_done, 2),
        "outbox": counts,
        "orthanc": {
            "studies": stats["CountStudies"],
            "series": stats["CountSeries"],
            "instances": stats["CountInstances"],
            "sr_instances": len(sops[SR]),
            "heatmap_instances": len(sops[SC]),
            "distinct_sr_uids": len(set(sops[SR])),
            "distinct_heatmap_uids": len(set(sops[SC])),
            "studies_with_exactly_one_sr_and_one_heatmap": per_study_ok,
        },
        "all_there_no_duplicates": (
            stats["CountStudies"] == a.n
            and len(set(sops[SR])) == len(sops[SR]) == a.n
            and len(set(sops[SC])) == len(sops[SC]) == a.n
            and per_study_ok == a.n
            and stats["CountInstances"] == 3 * a.n
        ),
        "load_average_before": load_before,
        "machine": machine(),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
