"""``cxr serve``, ``cxr export``, ``cxr fit-ood``, ``cxr fit-gate`` and ``cxr fit-population`` (a plugin of :mod:`cxrtriage.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxrtriage import DISCLAIMER
from cxrtriage.cli.config_args import add_model_argument

__all__ = ["register", "add_analysis_arguments", "analysis_settings"]


def _model_dir(value: str | None) -> Path:
    from cxrtriage.models.bundle import ModelLoadError, resolve_model_dir

    d = resolve_model_dir(value)
    if not (d / "config.json").is_file():
        raise ModelLoadError(f"{d}: not a model folder (config.json missing)")
    return d


def _cmd_serve(a: argparse.Namespace) -> int:
    import uvicorn

    from cxrtriage.serve.app import create_app
    from cxrtriage.serve.lan import qr_terminal
    from cxrtriage.serve.security import ensure_initial_user
    from cxrtriage.serve.service import StudyService
    from cxrtriage.serve.settings import INITIAL_PASSWORD_ENV, INITIAL_USER_ENV, NotifySettings, ServeSettings
    from cxrtriage.store import DatabaseURLError, StoreUnavailableError, UserError, resolve_database_url

    try:  # a bad URL is reported before the model loads
        resolve_database_url(a.database_url, a.data_dir)
    except DatabaseURLError as exc:
        print(f"cxr serve: --database-url: {exc}", file=sys.stderr)
        return 2
    if a.return_to:
        from cxrtriage.pacs.settings import Destination, check_ae_title

        try:
            a.return_to = str(Destination.parse(a.return_to))
            check_ae_title(a.dicom_ae_title)
        except ValueError as exc:
            print(f"cxr serve: {exc}", file=sys.stderr)
            return 2
    settings = ServeSettings(
        **analysis_settings(a),
        data_dir=Path(a.data_dir),
        database_url=a.database_url,
        host=a.host,
        port=a.port,
        max_upload_mb=a.max_upload_mb,
        https_only=a.https_only,
        upload_quota_per_hour=a.upload_quota,
        dicom_return_to=a.return_to,
        dicom_ae_title=a.dicom_ae_title,
    )
    try:
        settings.notify = NotifySettings(
            threshold=a.notify_threshold,
            webhook_url=a.notify_webhook,
            smtp_host=a.notify_smtp,
            email_to=tuple(a.notify_email_to),
        )
    except ValueError as exc:
        print(f"cxr serve: {exc}", file=sys.stderr)
        return 2
    try:  # one request = one image: multi-threaded BLAS for small NumPy products only adds contention
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    from cxrtriage.serve.memory import configure_malloc, release_free_memory

    configure_malloc()  # before any request thread: 2 malloc arenas for all of them
    try:
        service = StudyService(settings)  # load the model and open the database before listening
        created = ensure_initial_user(service.store)
    except (DatabaseURLError, StoreUnavailableError) as exc:
        print(f"cxr serve: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"cxr serve: ${INITIAL_USER_ENV} / ${INITIAL_PASSWORD_ENV}: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, service)
    models = ", ".join(f"{m.model_name} ({m.config.version}, {m.backend.name})" for m in service.engine.models)
    print(
        f"cxrtriage server: {len(service.engine.models)} model(s): {models}; data in {settings.data_dir}, "
        f"database {service.store.url.render_as_string(hide_password=True)}"
    )
    print(DISCLAIMER)
    if created:
        print(f"Created radiologist account {created!r} from ${INITIAL_USER_ENV} / ${INITIAL_PASSWORD_ENV}.")
    n_users = service.store.user_count()
    if n_users == 0:
        db = "" if a.database_url is None else " --database-url URL"
        print(
            "No users yet: every page and study needs a login. Create one (password asked twice) with\n"
            f"    cxr users add NAME --role radiologist --data-dir {settings.data_dir}{db}\n"
            f"or set ${INITIAL_USER_ENV} and ${INITIAL_PASSWORD_ENV} before `cxr serve`."
        )
    else:
        print(f"{n_users} user(s) can log in (cxr users list --data-dir {settings.data_dir}).")
    if settings.host in ("127.0.0.1", "localhost"):
        print("Listening on loopback only; use --host 0.0.0.0 to open the page from a phone on the same network.")
    qr_terminal(app.state.public_url)
    sender = None
    if settings.dicom_return_to:  # STOW-RS results: the outbox sender of cxr listen, in this process
        from cxrtriage.pacs.sender import Sender
        from cxrtriage.pacs.settings import Destination
        from cxrtriage.store import Outbox

        sender = Sender(Outbox(service.store), Destination.parse(settings.dicom_return_to), settings.dicom_ae_title)
        sender.start()
        app.state.wake_sender = sender.wake
        print(f"STOW-RS results (SR + heatmap Secondary Capture) go to {settings.dicom_return_to}")
    sys.stdout.flush()
    release_free_memory()  # what loading the models freed (parsed ONNX files, copies) goes back to the system
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning" if not a.verbose else "info",
            access_log=a.verbose,
        )
    finally:
        if sender is not None:
            sender.stop()
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    import onnx  # noqa: F401 - fail early (cxrtriage.cli.main names the extra) rather than deep inside torch.onnx
    import onnxruntime  # noqa: F401 - the export is verified with ONNX Runtime

    from cxrtriage.inference.backend import file_sha256
    from cxrtriage.inference.export import export_onnx

    d = _model_dir(a.model)
    out = export_onnx(d, a.out)
    print(f"wrote {out} (sha256 {file_sha256(out)})")
    return 0


def _cmd_fit_score_reference(a: argparse.Namespace) -> int:
    from cxrtriage.experiments.score_reference import fit_score_reference

    d = _model_dir(a.model)
    hist = fit_score_reference(d, data=a.data, n_bins=a.bins)
    print(f"validation score histogram of {hist['n']} images written to {d / 'bundle.json'}: {hist['counts']}")
    return 0


def _cmd_fit_ood(a: argparse.Namespace) -> int:
    from cxrtriage.ood.fit import fit_ood

    d = _model_dir(a.model)
    info = fit_ood(d, data=a.data, percentile=a.percentile, max_train=a.max_train, external=a.external or ())
    nat = info["natural_images"]
    print(f"OOD detector written to {d / 'ood.npz'} and the ood section of {d / 'bundle.json'}")
    print(f"threshold (p{a.percentile:g} of {info['n_val']} validation scores): {info['threshold']:.1f}")
    print(
        f"false rejection of validation CXRs (cross-calibrated): {100 * info['val_false_rejection_rate_cross_calibrated']:.2f}%"
    )
    print(
        f"rejection of {nat['n']} natural images: Mahalanobis {100 * nat['rejection_rate_mahalanobis']:.1f}%, with colour check {100 * nat['rejection_rate_colour_or_mahalanobis']:.1f}%"
    )
    for k, v in info.get("external_cxr_rejection", {}).items():
        print(f"rejection of {v['n']} CXRs from {k} (another population): {100 * v['rejection_rate']:.1f}%")
    if a.json:
        print(json.dumps(info, indent=2))
    return 0


def _cmd_fit_gate(a: argparse.Namespace) -> int:
    from cxrtriage.ood.gate import GATE_DIR, fit_gate

    data = Path(a.data)
    if not data.is_dir():
        raise ValueError(f"{data}: no such folder (the chest X-ray datasets, e.g. ../shared/data)")
    out = Path(a.out) if a.out else GATE_DIR
    info = fit_gate(data, out, per_set=a.per_set, rendered=a.rendered, seed=a.seed)
    print(f"gate written to {out} (gate.npz, gate.json); threshold (log-odds) {info['threshold']:.2f}")
    test = info["test_part"]
    for kind in ("chest_radiographs", "not_chest_radiographs"):
        for k, v in test[kind].items():
            print(f"test part, {kind}, {k}: {v['refused']}/{v['n']} refused ({100 * v['refusal_rate']:.1f}%)")
    if a.json:
        Path(a.json).write_text(json.dumps(info, indent=2) + "\n")
        print(f"figures written to {a.json}")
    return 0


def _cmd_fit_population(a: argparse.Namespace) -> int:
    from cxrtriage.ood.gate import GateFeatures
    from cxrtriage.ood.population import POPULATION_DIR, fit_population

    data = Path(a.data)
    if not data.is_dir():
        raise ValueError(f"{data}: no such folder (the chest X-ray datasets, e.g. ../shared/data)")
    out = Path(a.out) if a.out else POPULATION_DIR
    features = GateFeatures(threads=max(1, a.threads))
    info = fit_population(
        data, out, per_source=a.per_source, seed=a.seed, lung_shape=not a.no_lung_shape, features=features
    )
    print(
        f"population gate written to {out} (gate.npz, gate.json); threshold (log-odds of pediatric) {info['threshold']:.2f}"
    )
    for k, v in info["test_part"]["by_source"].items():
        print(
            f"test part, {k}: {v['misrouted']}/{v['n']} routed to the other population ({100 * v['misrouted_rate']:.1f}%)"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(info, indent=2) + "\n")
        print(f"figures written to {a.json}")
    return 0


def add_analysis_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the models and gates behind an upload (``cxr serve``, ``cxr listen``).

    ``--model`` (repeatable), ``--threads``, ``--segmenter-threads``, ``--segmenter``, ``--no-cxr-gate``,
    ``--no-population-gate``, ``--no-ood``, ``--max-batch``, ``--max-wait-ms``, ``--batch-queue``;
    :func:`analysis_settings` turns them into :class:`~cxrtriage.serve.settings.ServeSettings` fields.
    """
    from cxrtriage.serve.settings import ServeSettings

    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="model folder or shipped model name (`cxr models`); repeat for several models, run on every upload "
        "in this order (default: every shipped model)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=ServeSettings.threads,
        help="ONNX Runtime intra-op threads of each model (%(default)s; each network has its own worker thread "
        "already)",
    )
    p.add_argument(
        "--segmenter-threads",
        type=int,
        default=ServeSettings.segmenter_threads,
        help="ONNX Runtime intra-op threads of the lung segmenter (%(default)s)",
    )
    p.add_argument(
        "--segmenter",
        default=None,
        metavar="DIR",
        help="another lung segmenter folder instead of the shipped one (`cxr train-segmenter` output)",
    )
    p.add_argument(
        "--no-cxr-gate",
        action="store_true",
        help="gate 1 off: do not refuse images that are not chest radiographs (not recommended)",
    )
    p.add_argument(
        "--no-population-gate",
        action="store_true",
        help="gate 2 off: mark every model's result applicable, whatever the image's population (not recommended)",
    )
    p.add_argument("--no-ood", action="store_true", help="both gates off (--no-cxr-gate --no-population-gate)")
    g = p.add_argument_group("micro-batching across uploads (one ONNX Runtime call per network for several uploads)")
    g.add_argument(
        "--max-batch",
        type=int,
        default=ServeSettings.max_batch,
        help="most uploads sharing one call of a network (%(default)s; 1: each upload alone)",
    )
    g.add_argument(
        "--max-wait-ms",
        type=float,
        default=ServeSettings.max_wait_ms,
        help="longest wait of a network for more uploads, ms, only while its previous call had several "
        "(%(default)s: take what is queued; a lone upload never waits)",
    )
    g.add_argument(
        "--batch-queue",
        type=int,
        default=ServeSettings.batch_queue,
        help="most uploads waiting for one network; beyond, 503 busy with Retry-After (%(default)s)",
    )


def analysis_settings(a: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~cxrtriage.serve.settings.ServeSettings` fields of :func:`add_analysis_arguments`' options."""
    return {
        "model_dir": None,
        "model_dirs": tuple(_model_dir(m) for m in a.model or ()),
        "threads": a.threads,
        "segmenter_threads": a.segmenter_threads,
        "segmenter_dir": Path(a.segmenter) if a.segmenter else None,
        "cxr_gate": not (a.no_ood or a.no_cxr_gate),
        "population_gate": not (a.no_ood or a.no_population_gate),
        "max_batch": a.max_batch,
        "max_wait_ms": a.max_wait_ms,
        "batch_queue": a.batch_queue,
    }


def register(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add the ``serve``, ``export``, ``fit-ood``, ``fit-gate`` and ``fit-population`` sub-commands."""
    from cxrtriage.serve.settings import ServeSettings

    p = sub.add_parser("serve", help="web page + REST API for uploads, predictions, heatmaps and draft reports")
    p.add_argument("--host", default="127.0.0.1", help="listen address; 0.0.0.0 to reach it from a phone on the LAN")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--data-dir",
        default="cxrtriage-data",
        help="stored images, and the SQLite database unless --database-url is given",
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL of the studies database, e.g. postgresql+psycopg://user:password@host:5432/cxrtriage "
        "(default: SQLite file DATA_DIR/studies.sqlite3; schema migrated with Alembic at start-up)",
    )
    p.add_argument("--max-upload-mb", type=float, default=20.0)
    p.add_argument(
        "--https-only",
        action="store_true",
        help="mark the session cookie Secure (when a TLS reverse proxy is in front; see README 'Security')",
    )
    p.add_argument(
        "--upload-quota", type=int, default=2000, help="uploads per user per hour (default 2000; 0: no quota)"
    )
    p.add_argument(
        "--return-to",
        default=None,
        metavar="AE@HOST:PORT",
        help="send the SR and heatmap of each DICOMweb STOW-RS instance to this PACS by C-STORE (as cxr listen)",
    )
    p.add_argument(
        "--dicom-ae-title", default=ServeSettings.dicom_ae_title, help="our AE title when sending them (%(default)s)"
    )
    add_analysis_arguments(p)
    g = p.add_argument_group("critical-finding notifications (off unless --notify-threshold is given)")
    g.add_argument(
        "--notify-threshold",
        type=float,
        default=None,
        help="notify when a new study's AI priority (probability of a finding, 0-1) is at or above this",
    )
    g.add_argument("--notify-webhook", default=None, help="URL receiving a JSON POST per critical study")
    g.add_argument("--notify-smtp", default=None, help="SMTP server host[:port] for e-mail notifications")
    g.add_argument("--notify-email-to", action="append", default=[], help="e-mail recipient (repeatable)")
    commands["serve"] = _cmd_serve

    p = sub.add_parser("export", help="export a model folder to ONNX (model.onnx, checksum in the model card)")
    add_model_argument(p)
    p.add_argument("--out", default=None, help="output file (default MODEL/model.onnx)")
    commands["export"] = _cmd_export

    p = sub.add_parser(
        "fit-score-reference",
        help="store the validation score distribution in a model folder (the reference of drift monitoring)",
    )
    add_model_argument(p)
    p.add_argument("--data", default=None, help="dataset (default: recorded in bundle.json)")
    p.add_argument("--bins", type=int, default=20, help="histogram bins on [0, 1] (default 20)")
    commands["fit-score-reference"] = _cmd_fit_score_reference

    p = sub.add_parser("fit-ood", help="fit the out-of-distribution detector (Mahalanobis) of a model folder")
    add_model_argument(p)
    p.add_argument("--data", default=None, help="dataset (default: recorded in bundle.json)")
    p.add_argument("--percentile", type=float, default=99.5, help="threshold percentile of validation scores")
    p.add_argument("--max-train", type=int, default=None, help="random subset of training images")
    p.add_argument("--external", nargs="*", default=None, help="other CXR datasets whose rejection rate is reported")
    p.add_argument("--json", action="store_true", help="print the full OOD statistics (the bundle's ood section)")
    commands["fit-ood"] = _cmd_fit_ood

    p = sub.add_parser(
        "fit-gate", help='refit gate 1, the "is this a chest radiograph?" detector shipped with cxrtriage'
    )
    p.add_argument("--data", default="../shared/data", help="folder holding the chest X-ray datasets")
    p.add_argument("--out", default=None, help="output folder (default: the packaged gate, cxrtriage/ood/cxr_gate)")
    p.add_argument("--per-set", type=int, default=600, help="chest radiographs drawn per dataset")
    p.add_argument("--rendered", type=int, default=150, help="drawn non-radiographs per kind (pages, plots, patterns)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures (refusal rates per part) to this file")
    commands["fit-gate"] = _cmd_fit_gate

    p = sub.add_parser(
        "fit-population", help="refit gate 2, the pediatric-vs-adult population classifier shipped with cxrtriage"
    )
    p.add_argument("--data", default="../shared/data", help="folder holding the chest X-ray datasets")
    p.add_argument(
        "--out", default=None, help="output folder (default: the packaged gate, cxrtriage/ood/population_gate)"
    )
    p.add_argument("--per-source", type=int, default=5000, help="at most N images drawn per source (dataset or class)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-lung-shape", action="store_true", help="image features only (no lung segmenter shape statistics)"
    )
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads of the feature extractor")
    p.add_argument("--json", default=None, help="also write the figures (misrouted rates per source) to this file")
    commands["fit-population"] = _cmd_fit_population
