"""Micro-batching across requests: uploads arriving together share one ONNX Runtime call per network.

The dynamic batching of Triton Inference Server and TorchServe, in one small class. Each network of the
server (the gates' feature extractor, the lung segmenter, each classifier) gets a :class:`MicroBatcher`: a
bounded queue and one worker thread. A request thread preprocesses its image itself, :meth:`MicroBatcher.submit`\\ s
the network input and waits for its row of the output; the worker takes whatever is queued (up to
``max_batch`` items), stacks it, makes one call and hands each request its result.

Latency of a lone request: the worker starts a batch as soon as it has an item. It waits up to
``max_wait_ms`` for company only when the queue is empty *and* its previous batch had more than one item
(other requests are in flight); a single client therefore never waits. Under load the batches form by
themselves: requests queue while the worker runs the previous batch.

Back-pressure: at most ``max_queue`` items wait; :meth:`MicroBatcher.submit` raises :class:`QueueFullError`
beyond that (the server answers 503 with ``Retry-After``). Memory is bounded by ``max_queue`` inputs.

Isolation: when a batched call raises, every item of the batch is run again alone, so an item that fails
only fails its own request.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["MicroBatcher", "QueueFullError", "BatcherClosedError"]

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(RuntimeError):
    """The batcher's queue holds ``max_queue`` items: the caller should be told to retry later.

    Attributes
    ----------
    name : str
        The batcher's name (the network).
    max_queue : int
        Its queue bound.
    """

    def __init__(self, name: str, max_queue: int) -> None:
        super().__init__(f"{name}: {max_queue} images already waiting for this network")
        self.name, self.max_queue = name, max_queue


class BatcherClosedError(RuntimeError):
    """The batcher was closed; it takes no more items."""


class MicroBatcher(Generic[T, R]):
    """One network's queue and worker thread: items submitted within a few milliseconds share one call.

    Parameters
    ----------
    run : callable
        ``run(items) -> results``: one call on a list of 1 to ``max_batch`` items, returning one result per
        item in order (e.g. ``float32 (1, S, S)`` inputs stacked into one ONNX Runtime call, the output rows
        back). Called on the worker thread only, so it needs no lock of its own.
    name : str
        Used in messages and the worker thread's name.
    max_batch : int
        Most items per call (>= 1; 1: no batching, only the queue).
    max_wait_ms : float
        Longest wait for more items once a batch has started, milliseconds (>= 0); only waited when the
        previous batch had company (see the module docstring).
    max_queue : int
        Most items waiting (>= 1); :meth:`submit` raises :class:`QueueFullError` beyond.

    Raises
    ------
    ValueError
        ``max_batch`` or ``max_queue`` < 1, or ``max_wait_ms`` < 0.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        name: str,
        max_batch: int = 16,
        max_wait_ms: float = 0.0,
        max_queue: int = 64,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(
                f"{name}: max_batch >= 1, max_queue >= 1 and max_wait_ms >= 0 expected, got "
                f"{max_batch}, {max_queue}, {max_wait_ms}"
            )
        self.run, self.name = run, name
        self.max_batch, self.max_wait_s, self.max_queue = int(max_batch), float(max_wait_ms) / 1e3, int(max_queue)
        self._queue: collections.deque[tuple[T, concurrent.futures.Future[R]]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._last_batch = 0
        #: counters: ``batches`` (calls), ``items`` (run), ``refused`` (queue full), ``largest`` (batch),
        #: ``retried`` (batches re-run item by item after an error)
        self.stats = {"batches": 0, "items": 0, "refused": 0, "largest": 0, "retried": 0}
        self._thread = threading.Thread(target=self._work, name=f"cxrtriage-batch-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: T) -> concurrent.futures.Future[R]:
        """Queue one item; its future gets the item's result (or the exception its call raised).

        Raises
        ------
        QueueFullError
            ``max_queue`` items are already waiting.
        BatcherClosedError
            After :meth:`close`.
        """
        fut: concurrent.futures.Future[R] = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise BatcherClosedError(f"{self.name}: closed")
            if len(self._queue) >= self.max_queue:
                self.stats["refused"] += 1
                raise QueueFullError(self.name, self.max_queue)
            self._queue.append((item, fut))
            self._cond.notify()
        return fut

    def __call__(self, item: T) -> R:
        """:meth:`submit` one item and wait for its result (its exception is raised here)."""
        return self.submit(item).result()

    def queued(self) -> int:
        """Items waiting now (not yet taken by the worker)."""
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new items, finish the queued ones, stop the worker (waiting at most ``timeout`` s)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- worker -------------------------------------------------------------
    def _take(self) -> list[tuple[T, concurrent.futures.Future[R]]] | None:
        """The next batch (None when closed and drained)."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            batch = [self._queue.popleft()]
            wait = self.max_wait_s if self._last_batch > 1 else 0.0
            deadline = time.monotonic() + wait
            while len(batch) < self.max_batch:
                if self._queue:
                    batch.append(self._queue.popleft())
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            self._last_batch = len(batch)
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if live:
                self._run_batch(live)

    def _run_batch(self, batch: list[tuple[T, concurrent.futures.Future[R]]]) -> None:
        self.stats["batches"] += 1
        self.stats["items"] += len(batch)
        self.stats["largest"] = max(self.stats["largest"], len(batch))
        try:
            results = list(self.run([item for item, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # noqa: BLE001 - handed to the callers, never kills the worker
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            self.stats["retried"] += 1
            for item, fut in batch:  # one item's failure must not fail the others: each alone
                try:
                    (res,) = self.run([item])
                except BaseException as one:  # noqa: BLE001
                    fut.set_exception(one)
                else:
                    fut.set_result(res)
            return
        for (_, fut), res in zip(batch, results):
            fut.set_result(res)
