"""The gRPC server's worker threads, handed out most-recently-idle first.

``concurrent.futures.ThreadPoolExecutor`` wakes whichever idle worker waited
longest, so one client sending requests back to back has each one handled by
the next of the 16 threads in turn: its stack, its TensorFlow thread-local
state and the interpreter's view of them are cold in the CPU caches every
time. On the shared 2-core machine (load ≈ 10) 16 such threads were
0.3–0.6 ms slower per request at concurrency 1 than a pool of one thread
(``docs/serving.md``).
``LifoWorkerPool`` wakes the worker that went idle last instead, so a light
load keeps running on one warm thread while a heavy one still gets up to
``max_workers`` threads.
"""
from __future__ import annotations

import collections
import threading
from concurrent import futures
from typing import Any, Callable

_WorkItem = tuple  # (future, function, args, kwargs)


class _Worker:
    __slots__ = ("thread", "wake", "item")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()  # released by whoever hands this worker an item (or None to stop)
        self.item: _WorkItem | None = None
        self.thread: threading.Thread | None = None


def _run_item(item: _WorkItem) -> None:
    future, function, args, kwargs = item
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = function(*args, **kwargs)
    except BaseException as error:  # the future carries it, as ThreadPoolExecutor does
        future.set_exception(error)
    else:
        future.set_result(result)


class LifoWorkerPool(futures.Executor):
    """An executor of at most ``max_workers`` threads that reuses the last idle one first.

    Parameters
    ----------
    max_workers : int
        Most threads running calls at once; further calls queue (FIFO).
    thread_name_prefix : str
        Worker threads are named ``<prefix>_<n>``.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "worker") -> None:
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # a stack: the last worker to go idle is woken first
        self._queued: collections.deque[_WorkItem] = collections.deque()
        self._workers: list[_Worker] = []
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future:
        """Schedule ``fn(*args, **kwargs)``; a Future of its result."""
        future: futures.Future = futures.Future()
        item = (future, fn, args, kwargs)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._idle:
                worker = self._idle.pop()
                worker.item = item
                worker.wake.release()
            elif len(self._workers) < self._max_workers:
                worker = _Worker()
                worker.item = item
                worker.wake.release()
                worker.thread = threading.Thread(target=self._work, args=(worker,), daemon=True,
                                                 name=f"{self._prefix}_{len(self._workers)}")
                self._workers.append(worker)
                worker.thread.start()
            else:
                self._queued.append(item)
        return future

    def _work(self, worker: _Worker) -> None:
        while True:
            worker.wake.acquire()
            item, worker.item = worker.item, None
            while item is not None:
                _run_item(item)
                del item  # drop the call's references before waiting for the next one
                with self._lock:
                    if self._queued:
                        item = self._queued.popleft()
                        continue
                    if self._shutdown:
                        return
                    self._idle.append(worker)
                    item = None
            if self._shutdown:
                return

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls, stop the threads once the queue drains; optionally wait for them."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._queued:
                    self._queued.popleft()[0].cancel()
            idle, self._idle = self._idle, []
            for worker in idle:
                worker.item = None
                worker.wake.release()
            workers = list(self._workers)
        if wait:
            for worker in workers:
                if worker.thread is not None and worker.thread is not threading.current_thread():
                    worker.thread.join()
