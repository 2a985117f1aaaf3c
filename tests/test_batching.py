"""Micro-batching across requests (``cxrtriage.serve.batching``): the batcher alone, results of a batch equal to
those of images run alone (every shipped model, both gates, the segmenter), back-pressure with a real server."""

from __future__ import annotations

import csv
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cxrtriage.serve.batching import BatcherClosedError, MicroBatcher, QueueFullError


# -- the batcher alone ------------------------------------------------------
def _slow_double(delay: float = 0.02):
    calls: list[int] = []

    def run(items: list[int]) -> list[int]:
        calls.append(len(items))
        time.sleep(delay)
        return [2 * i for i in items]

    return run, calls


def test_lone_item_does_not_wait_for_company():
    run, calls = _slow_double(0.0)
    b = MicroBatcher(run, "t", max_batch=8, max_wait_ms=500, max_queue=4)
    try:
        for i in range(5):
            t0 = time.perf_counter()
            assert b(i) == 2 * i
            assert time.perf_counter() - t0 < 0.25  # far below max_wait_ms = 500
        assert calls == [1] * 5
    finally:
        b.close()


def test_concurrent_items_share_calls_and_get_their_own_results():
    run, calls = _slow_double(0.02)
    b = MicroBatcher(run, "t", max_batch=8, max_wait_ms=5, max_queue=64)
    try:
        with ThreadPoolExecutor(16) as pool:
            out = list(pool.map(b, range(64)))
        assert out == [2 * i for i in range(64)]
        assert sum(calls) == 64 and max(calls) > 1 and max(calls) <= 8
        assert b.stats["items"] == 64 and b.stats["largest"] == max(calls)
    finally:
        b.close()


def test_full_queue_refuses_and_stays_bounded():
    gate = threading.Event()

    def run(items: list[int]) -> list[int]:
        gate.wait(10)
        return items

    b = MicroBatcher(run, "net", max_batch=2, max_queue=3)
    try:
        first = b.submit(0)  # taken by the worker, which blocks in run
        deadline = time.monotonic() + 5
        while b.queued() and time.monotonic() < deadline:
            time.sleep(0.005)
        waiting = [b.submit(i) for i in (1, 2, 3)]
        assert b.queued() == 3
        with pytest.raises(QueueFullError, match="net: 3 images already waiting") as exc:
            b.submit(4)
        assert exc.value.max_queue == 3 and b.stats["refused"] == 1
        gate.set()
        assert first.result(5) == 0 and [f.result(5) for f in waiting] == [1, 2, 3]
        assert b.submit(5).result(5) == 5  # room again once drained
    finally:
        gate.set()
        b.close()
    with pytest.raises(BatcherClosedError):
        b.submit(6)


def test_one_bad_item_fails_only_itself():
    release = threading.Event()

    def run(items: list[int]) -> list[float]:
        release.wait(10)
        if any(i < 0 for i in items):
            raise ValueError("negative item")
        return [float(i) for i in items]

    b = MicroBatcher(run, "t", max_batch=8, max_queue=16)
    try:
        blocker = b.submit(100)
        deadline = time.monotonic() + 5
        while b.queued() and time.monotonic() < deadline:
            time.sleep(0.005)
        futs = [b.submit(i) for i in (1, -1, 2, 3)]  # queued together: one batch after the blocker
        release.set()
        assert blocker.result(5) == 100.0
        assert [futs[i].result(5) for i in (0, 2, 3)] == [1.0, 2.0, 3.0]
        with pytest.raises(ValueError, match="negative"):
            futs[1].result(5)
        assert b.stats["retried"] == 1 and b.stats["largest"] == 4
        assert b(7) == 7.0  # the worker lives on
    finally:
        release.set()
        b.close()


def test_wrong_result_count_is_an_error_of_each_item():
    b = MicroBatcher(lambda items: [], "t", max_batch=4)
    try:
        with pytest.raises(RuntimeError, match="0 results for 1 items"):
            b(1)
    finally:
        b.close()


def test_settings_refuse_nonsense():
    from cxrtriage.serve.settings import ServeSettings

    for kw in ({"max_batch": 0}, {"batch_queue": 0}, {"max_wait_ms": -1.0}):
        with pytest.raises(ValueError, match="max_batch >= 1"):
            ServeSettings(model_dir=None, data_dir=Path("unused"), **kw)
    for kw in ({"threads": 0}, {"gate_threads": 0}, {"segmenter_threads": 0}):
        with pytest.raises(ValueError, match="segmenter_threads >= 1"):
            ServeSettings(model_dir=None, data_dir=Path("unused"), **kw)
    with pytest.raises(ValueError):
        MicroBatcher(lambda items: items, "t", max_batch=0)


def test_a_segmenter_folder_asked_for_by_name_must_load(tmp_path):
    from cxrtriage.segment.bundle import SegmenterBundleError
    from cxrtriage.serve.service import Engine
    from cxrtriage.serve.settings import ServeSettings

    (tmp_path / "not-a-segmenter").mkdir()
    settings = ServeSettings(model_dir=None, data_dir=tmp_path / "data", segmenter_dir=tmp_path / "not-a-segmenter")
    with pytest.raises(SegmenterBundleError, match="not-a-segmenter"):
        Engine(settings)


# -- the server's networks: a batch gives what each image gives alone -------------------------------
def _real_cxrs(examples_dir: Path, shared: Path, per_source: int = 3) -> list[np.ndarray]:
    from cxrtriage.data.io import read_image

    imgs = [read_image(p) for p in sorted(examples_dir.glob("*.jpg"))]
    for name in ("covid19-radiography", "nih-cxr14-normal-abnormal-64px", "ieee8023-cxr", "rsna-lungs"):
        manifest = shared / name / "manifest.csv"
        if not manifest.is_file():
            continue
        with open(manifest, newline="") as fh:
            rows = [r["path"] for r in csv.DictReader(fh)][:per_source]
        imgs += [read_image(shared / name / r) for r in rows]
    return imgs


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from cxrtriage.serve.service import Engine
    from cxrtriage.serve.settings import ServeSettings

    e = Engine(ServeSettings(model_dir=None, data_dir=tmp_path_factory.mktemp("unused"), max_batch=8, max_wait_ms=20))
    if e.segmenter is None or e.gate is None or e.population_gate is None:
        pytest.skip("the shipped segmenter and both gates are needed")
    yield e
    e.close()


def _whole(engine, img):
    g = engine.gates(img)
    lungs, _ = engine.segment(img)
    g = engine.route(g, lungs)  # gate 2, with the lung mask
    return g, lungs, engine.analyze(img, g.population, lungs)  # the lung-input models reuse the mask


def test_batched_results_equal_results_alone(engine, examples_dir, shared_data_dir):
    imgs = _real_cxrs(examples_dir, shared_data_dir)
    assert len(imgs) >= 12
    alone = [_whole(engine, im) for im in imgs]  # one client: every call a batch of one
    before = {b.name: dict(b.stats) for b in engine.batchers()}
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda im: _whole(engine, im), imgs * 2))
    grew = {b.name: b.stats["largest"] for b in engine.batchers()}
    assert all(before[n]["largest"] == 1 for n in before), before  # alone really was alone
    assert max(grew.values()) > 1, grew  # and concurrent uploads really met in batches
    for (g1, m1, a1), (g2, m2, a2) in zip(alone * 2, together):
        assert g1.is_cxr == g2.is_cxr and g1.population == g2.population
        assert g1.cxr_score == pytest.approx(g2.cxr_score, abs=1e-3)
        assert g1.population is not None
        assert g1.population_score == pytest.approx(g2.population_score, abs=1e-3)
        assert (m1 is None) == (m2 is None)
        if m1 is not None:
            assert m1.failed == m2.failed
            assert np.mean(m1.mask != m2.mask) < 1e-3  # pixels on the threshold may flip
        for x, y in zip(a1, a2):
            np.testing.assert_allclose(x.probabilities, y.probabilities, atol=1e-5)
            assert x.label == y.label and x.applicable == y.applicable
            if x.cam is not None:
                np.testing.assert_allclose(x.cam, y.cam, atol=1e-4)
            if x.ood_score is not None:
                assert x.ood_score == pytest.approx(y.ood_score, rel=1e-4, abs=1e-3)


def test_batched_equals_the_unbatched_networks(engine, examples_dir):
    """The engine's path equals calling each network directly on the image alone (no batcher)."""
    from cxrtriage.data.io import read_image
    from cxrtriage.explain.cam import cam_from_features, normalize_cam
    from cxrtriage.metrics.calibration import softmax

    img = read_image(sorted(examples_dir.glob("*.jpg"))[0])
    seg = engine.segmenter
    for m, a in zip(engine.models, _whole(engine, img)[2]):
        x = m.backend.preprocess(img)[None]  # the pre-batching path (the shipped segmenter for the lung step)
        logits, fmap = m.backend.run([x], features="map")
        np.testing.assert_allclose(a.probabilities, softmax(logits, m.config.temperature)[0], atol=1e-5)
        cam = normalize_cam(cam_from_features(fmap[0], m.backend.head[0], a.label_index))
        np.testing.assert_allclose(a.cam, cam, atol=1e-4)
    direct = seg.segment(img)
    assert np.mean(direct.mask != engine.segment(img)[0].mask) < 1e-3


def test_one_segmenter_call_per_upload(engine, examples_dir):
    """The upload's mask feeds gate 2 and every lung-input model: the segmenter runs once, not once per model,
    and the lung-input models get the input they get when they segment the image themselves."""
    from cxrtriage.data.io import read_image

    lung_models = [m for m in engine.models if m.config.input != "full"]
    if not lung_models:
        pytest.skip("no shipped lung-input model")
    seg_batcher = next(b for b in engine.batchers() if b.name == "segmenter")
    for p in sorted(examples_dir.glob("*.jpg"))[:3]:
        img = read_image(p)
        before = seg_batcher.stats["items"]
        lungs = _whole(engine, img)[1]
        assert seg_batcher.stats["items"] - before == 1
        for m in lung_models:
            np.testing.assert_array_equal(m.inputs(img, lungs), m.inputs(img))  # reused = segmented again
        assert seg_batcher.stats["items"] - before == 1 + len(lung_models)  # m.inputs(img) alone segments


def test_a_bad_upload_in_a_batch_fails_alone(engine, examples_dir):
    """An input the network refuses (wrong shape) fails its own request; the images batched with it succeed."""
    from cxrtriage.data.io import read_image

    m = engine.models[0]
    imgs = [read_image(p) for p in sorted(examples_dir.glob("*.jpg"))[:6]]
    good = [m.inputs(im) for im in imgs]
    ref = [m.finish(m.batcher(x), 0.0).probabilities for x in good]
    bad = np.zeros((2, *good[0].shape[1:]), np.float32)  # two channels: refused by the network
    with ThreadPoolExecutor(8) as pool:
        futs = [pool.submit(m.batcher, x) for x in [*good[:3], bad, *good[3:]] * 3]
        outcome = []
        for f in futs:
            try:
                outcome.append(m.finish(f.result(), 0.0).probabilities)
            except Exception as exc:  # noqa: BLE001
                outcome.append(exc)
    for k, o in enumerate(outcome):
        if k % 7 == 3:
            assert isinstance(o, Exception)
        else:
            np.testing.assert_allclose(o, ref[k % 7 - (k % 7 > 3)], atol=1e-5)


# -- back-pressure through a real server ---------------------------------------------------------------
def test_full_queue_answers_503_with_retry_after(tmp_path, examples_dir):
    import httpx

    from cxrtriage.data.io import read_image
    from cxrtriage.serve.settings import ServeSettings
    from cxrtriage.serve.testing import find_model_dir, running_server
    from cxrtriage.store import StudyStore

    src = find_model_dir()
    if src is None:
        pytest.skip("no shipped model")
    store = StudyStore(tmp_path)
    store.add_user("rad", "rad-password-1", "radiologist")
    store.close()
    settings = ServeSettings(
        model_dir=src, data_dir=tmp_path, port=0, max_batch=1, batch_queue=1, upload_quota_per_hour=0
    )
    base = read_image(sorted(examples_dir.glob("*.jpg"))[0])
    rng = np.random.default_rng(0)

    def payload(k: int) -> bytes:
        import io

        from PIL import Image

        noisy = np.clip(base.astype(int) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="PNG")
        return buf.getvalue()

    payloads = [payload(k) for k in range(64)]
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=60, auth=("rad", "rad-password-1")) as c:
        with ThreadPoolExecutor(24) as pool:
            rs = list(
                pool.map(lambda d: c.post("/api/v1/predict", files={"file": ("x.png", d, "image/png")}), payloads)
            )
        codes = [r.status_code for r in rs]
        assert set(codes) <= {200, 503}, codes
        busy = [r for r in rs if r.status_code == 503]
        assert busy and codes.count(200) > 0, codes
        for r in busy:
            assert r.headers["Retry-After"] == "1"
            j = r.json()
            assert j["error"] == "busy" and "at capacity" in j["reason"] and "retry" in j["reason"]
        assert c.get("/api/v1/health").json()["status"] == "ok"
        stored = c.get("/api/v1/health").json()["studies"]
        assert stored == codes.count(200)  # a refused upload stores nothing
        r = c.post("/api/v1/predict", files={"file": ("y.png", payload(99), "image/png")})
        assert r.status_code == 200, r.text  # healthy afterwards
