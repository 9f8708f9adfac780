"""Server-side batching: concurrent Predict calls share one signature call.

Requests for the same model, version and signature are queued; a dispatcher
forms a batch when ``max_batch_size`` rows are waiting or the oldest request
has waited ``batch_timeout_micros``, and a batch thread is free. Inputs are
concatenated along dim 0, the signature runs once, and each request gets its
own rows of every output back. Only requests whose inputs agree on every
dimension but the first share a batch (no padding, as TF Serving's default
``pad_variable_length_inputs: false``).

Why it helps here: each signature call costs a fixed Python and TF dispatch
overhead that a batch of N rows pays once instead of N times.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Mapping

import grpc
import numpy as np

from musicrec.serving.errors import ServingError
from musicrec.serving.server_options import BatchingOptions
from musicrec.serving.worker_pool import LifoWorkerPool

Arrays = Mapping[str, np.ndarray]
Execute = Callable[[Arrays], dict[str, np.ndarray]]

IDLE_QUEUE_SECONDS = 30.0  # a queue (and its dispatcher thread) with no requests for this long is dropped


class _Task:
    __slots__ = ("arrays", "rows", "shape_key", "enqueued_at", "unfinished", "outputs", "error")

    def __init__(self, arrays: Arrays, rows: int) -> None:
        self.arrays = arrays
        self.rows = rows
        self.shape_key = tuple(sorted((alias, array.shape[1:]) for alias, array in arrays.items()))
        self.enqueued_at = time.monotonic()
        # Held until the batch is done: one lock per request is cheaper to make
        # and to signal than an Event (a Condition and a lock).
        self.unfinished = threading.Lock()
        self.unfinished.acquire()
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        self.unfinished.release()

    def wait(self) -> None:
        self.unfinished.acquire()


def _rows_of(arrays: Arrays) -> int:
    sizes = {array.shape[0] if array.ndim else None for array in arrays.values()}
    if len(sizes) != 1 or None in sizes:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "Batching session Run() input tensors must have equal 0th-dimension size",
        )
    return sizes.pop()


class _BatchQueue:
    """Tasks for one (servable, signature); one dispatcher thread forms batches."""

    def __init__(self, scheduler: "BatchScheduler", key: tuple, execute: Execute) -> None:
        self._scheduler = scheduler
        self._key = key
        self._execute = execute
        self._tasks: collections.deque[_Task] = collections.deque()
        self._queued_rows = 0
        self._condition = threading.Condition()
        self.closed = False
        self._thread = threading.Thread(target=self._dispatch, name=f"batcher-{key[0]}", daemon=True)
        self._thread.start()

    def submit(self, task: _Task) -> None:
        options = self._scheduler.options
        with self._condition:
            if self.closed:
                raise _QueueClosed()
            if self._queued_rows + task.rows > options.max_batch_size * options.max_enqueued_batches:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full",
                )
            self._tasks.append(task)
            self._queued_rows += task.rows
            # The dispatcher waits for a first task, then for a full batch or its
            # oldest task's timeout (a timed wait): other arrivals need not wake it.
            if len(self._tasks) == 1 or self._queued_rows >= options.max_batch_size:
                self._condition.notify()

    def _wait_for_work(self) -> bool:
        """Block until a task is queued; False when the queue idled out or the scheduler stops."""
        with self._condition:
            idle_since = time.monotonic()
            while not self._tasks:
                if self._scheduler.stopping or time.monotonic() - idle_since > IDLE_QUEUE_SECONDS:
                    self.closed = True
                    return False
                self._condition.wait(1.0)
            return True

    def _take_batch(self) -> list[_Task]:
        """Wait until the batch is full or its oldest task timed out, then pop it."""
        options = self._scheduler.options
        timeout_seconds = options.batch_timeout_micros / 1e6
        with self._condition:
            due = self._tasks[0].enqueued_at + timeout_seconds
            while self._queued_rows < options.max_batch_size and not self._scheduler.stopping:
                remaining = due - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            first = self._tasks[0]
            batch, rows, skipped = [], 0, collections.deque()
            while self._tasks:
                task = self._tasks.popleft()
                if task.shape_key != first.shape_key or rows + task.rows > options.max_batch_size:
                    skipped.append(task)
                    continue
                batch.append(task)
                rows += task.rows
            self._tasks = skipped
            self._queued_rows -= rows
            return batch

    def _dispatch(self) -> None:
        while self._wait_for_work():
            # A batch thread is claimed only once there is work, so idle queues
            # of other models never hold the shared threads; requests keep
            # queuing (and batches grow) while all threads are busy.
            self._scheduler.slots.acquire()
            self._scheduler.pool_submit(self._run_batch, self._take_batch())
        self._scheduler.forget(self._key, self)

    def _run_batch(self, batch: list[_Task]) -> None:
        try:
            if len(batch) == 1:
                batch[0].outputs = self._execute(batch[0].arrays)
            else:
                merged = {
                    alias: np.concatenate([task.arrays[alias] for task in batch])
                    for alias in batch[0].arrays
                }
                outputs = self._execute(merged)
                total = sum(task.rows for task in batch)
                for alias, array in outputs.items():
                    if array.ndim == 0 or array.shape[0] != total:
                        raise ServingError(
                            grpc.StatusCode.FAILED_PRECONDITION,
                            f"Batched output tensor {alias} has shape {list(array.shape)}, "
                            f"whose 0th dimension is not the batch size {total}",
                        )
                start = 0
                for task in batch:
                    task.outputs = {alias: array[start:start + task.rows] for alias, array in outputs.items()}
                    start += task.rows
        except BaseException as error:  # every waiter must wake up with the failure
            for task in batch:
                task.error = error
        finally:
            for task in batch:
                task.finish()
            self._scheduler.slots.release()


class _QueueClosed(Exception):
    """The queue idled out between lookup and submit; the caller makes a new one."""


class BatchScheduler:
    """Batches concurrent calls that share a key (model, version, signature).

    Parameters
    ----------
    options : BatchingOptions
        Sizes, timeout and thread count (see ``server_options``).
    """

    def __init__(self, options: BatchingOptions) -> None:
        self.options = options
        self.stopping = False
        self.slots = threading.BoundedSemaphore(options.num_batch_threads)
        self._queues: dict[tuple, _BatchQueue] = {}
        self._lock = threading.Lock()
        # Threads that outlive a batch: starting one per batch cost a thread's
        # start-up in every batch cycle.
        self._batch_threads = LifoWorkerPool(options.num_batch_threads, thread_name_prefix="batch-run")

    def pool_submit(self, function: Callable, *args) -> None:
        # ``slots`` bounds how many batches run at once.
        try:
            self._batch_threads.submit(function, *args)
        except RuntimeError:  # the threads were stopped: a batch queued since then still runs
            function(*args)

    def forget(self, key: tuple, queue: _BatchQueue) -> None:
        with self._lock:
            if self._queues.get(key) is queue:
                del self._queues[key]
            if self.stopping and not self._queues:
                self._batch_threads.shutdown(wait=False)  # they exit once the batches handed to them ran

    def run(self, key: tuple, execute: Execute, arrays: Arrays) -> dict[str, np.ndarray]:
        """Run ``execute`` on ``arrays``, batched with concurrent calls of the same ``key``.

        Parameters
        ----------
        key : tuple
            Identity of what may share a batch, e.g. ``(model, version, signature)``.
        execute : callable
            ``execute(arrays) -> {alias: array}``; every output's dim 0 must be
            the batch's rows.
        arrays : Mapping[str, np.ndarray]
            This call's inputs, all with the same dim 0 (its rows).

        Raises
        ------
        ServingError
            INVALID_ARGUMENT when the inputs disagree on dim 0 or have more rows
            than ``max_batch_size``; UNAVAILABLE when the queue is full or the
            scheduler stops; whatever ``execute`` raised otherwise.
        """
        rows = _rows_of(arrays)
        if rows > self.options.max_batch_size:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Task size {rows} is larger than maximum input batch size {self.options.max_batch_size}",
            )
        task = _Task(arrays, rows)
        while True:
            if self.stopping:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "the batch scheduler is stopping")
            with self._lock:
                queue = self._queues.get(key)
                if queue is None or queue.closed:
                    queue = self._queues[key] = _BatchQueue(self, key, execute)
            try:
                queue.submit(task)
                break
            except _QueueClosed:
                continue
        task.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def stop(self) -> None:
        """Finish queued batches, then let the dispatcher and batch threads exit."""
        self.stopping = True
        with self._lock:
            if not self._queues:
                self._batch_threads.shutdown(wait=False)
