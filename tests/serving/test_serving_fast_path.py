"""The request path's shortcuts give what the plain calls give: the flat signature
call against ``loaded.signatures[key](**inputs)``, the TensorProto decoders
against TensorFlow's, and the LIFO worker pool against what gRPC expects of an
executor."""
from __future__ import annotations

import os
import threading
import time
from concurrent import futures

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from musicrec.serving.loading import load_servable
from musicrec.serving.wire import DEFAULT_SIGNATURE_NAME
from musicrec.serving.signature_call import SignatureCaller
from musicrec.serving.tensor_proto import element_count, make_tensor_proto, to_bytes_array, to_ndarray
from musicrec.serving.worker_pool import LifoWorkerPool

VOCABULARY = ["rock", "jazz", "pop"]


def export_three_inputs(export_dir: str) -> None:
    """Inputs "weights" float32 [batch, 3], "count" int64 [batch], "genre" string [batch];
    outputs "score" float32 [batch], "genre_id" int64 [batch], "echo" string [batch]."""
    weights = keras.Input(shape=(3,), name="weights")
    count = keras.Input(shape=(), dtype="int64", name="count")
    genre = keras.Input(shape=(), dtype="string", name="genre")
    scale = keras.layers.Lambda(lambda value: keras.ops.cast(value, "float32"), name="scale")(count)
    total = keras.layers.Lambda(lambda value: keras.ops.sum(value, axis=-1), name="total")(weights)
    score = keras.layers.Multiply(name="score")([total, scale])
    genre_id = keras.layers.StringLookup(vocabulary=VOCABULARY, name="to_id")(genre)
    echo = keras.layers.StringLookup(vocabulary=VOCABULARY, invert=True, name="to_genre")(genre_id)
    model = keras.Model([weights, count, genre], {"score": score, "genre_id": genre_id, "echo": echo})
    model.export(export_dir, verbose=False)


@pytest.fixture(scope="module")
def three_inputs(tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("fast_path") / "1")
    export_three_inputs(export_dir)
    return load_servable("three", 1, export_dir)


def request_arrays(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "weights": rng.normal(size=(rows, 3)).astype(np.float32),
        "count": rng.integers(0, 9, size=rows).astype(np.int64),
        "genre": np.array([VOCABULARY[i % 3].encode() if i % 4 else b"polka" for i in range(rows)], dtype=object),
    }


def read_only(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays as a decoded request holds them: read-only views of the proto bytes."""
    return {alias: to_ndarray(make_tensor_proto(array)) for alias, array in arrays.items()}


def assert_same_outputs(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert set(ours) == set(reference)
    for alias, expected in reference.items():
        assert ours[alias].dtype == expected.dtype and ours[alias].shape == expected.shape, alias
        assert ours[alias].tolist() == expected.tolist(), alias


def test_flat_call_matches_the_keyword_call_on_a_three_input_signature(three_inputs):
    function = three_inputs.functions[DEFAULT_SIGNATURE_NAME]
    signature = three_inputs.signature_defs[DEFAULT_SIGNATURE_NAME]
    caller = SignatureCaller(function, signature)
    assert caller.flat_order is not None and sorted(caller.flat_order) == ["count", "genre", "weights"]
    for rows, seed in ((1, 0), (5, 1), (0, 2)):
        arrays = request_arrays(rows, seed)
        reference = {alias: value.numpy() for alias, value in
                     function(**{alias: tf.constant(array) for alias, array in arrays.items()}).items()}
        assert_same_outputs(caller(read_only(arrays)), reference)
        assert_same_outputs(caller(arrays), reference)  # writable arrays (REST, batches)
        assert_same_outputs(SignatureCaller(function, signature, use_flat_call=False)(arrays), reference)
        assert_same_outputs(three_inputs.execute(DEFAULT_SIGNATURE_NAME, read_only(arrays)), reference)


def test_flat_call_tensors_do_not_follow_later_writes_to_a_writable_array(three_inputs):
    caller = SignatureCaller(three_inputs.functions[DEFAULT_SIGNATURE_NAME],
                             three_inputs.signature_defs[DEFAULT_SIGNATURE_NAME])
    arrays = request_arrays(2, 3)
    tensors = caller.tensors(arrays)
    before = tensors["weights"].numpy().copy()
    arrays["weights"][:] = 99.0
    np.testing.assert_array_equal(tensors["weights"].numpy(), before)
    assert {alias: tensor.dtype for alias, tensor in tensors.items()} == {
        "weights": tf.float32, "count": tf.int64, "genre": tf.string}


def test_a_function_without_a_usable_flat_signature_takes_the_keyword_call(three_inputs):
    signature = three_inputs.signature_defs[DEFAULT_SIGNATURE_NAME]
    calls = []

    def keyword_only(**tensors):
        calls.append(sorted(tensors))
        return {"score": tensors["weights"][:, 0]}

    caller = SignatureCaller(keyword_only, signature)
    assert caller.flat_order is None
    outputs = caller(read_only(request_arrays(2, 4)))
    assert calls == [["count", "genre", "weights"]] and outputs["score"].shape == (2,)


def test_an_input_that_does_not_convert_raises_like_convert_to_tensor(three_inputs):
    caller = SignatureCaller(three_inputs.functions[DEFAULT_SIGNATURE_NAME],
                             three_inputs.signature_defs[DEFAULT_SIGNATURE_NAME])
    arrays = request_arrays(1, 5)
    arrays["count"] = np.array(["x"], dtype=object)
    with pytest.raises((TypeError, ValueError)):
        tf.convert_to_tensor(arrays["count"], dtype=tf.int64)
    with pytest.raises((TypeError, ValueError)):
        caller(arrays)


# ------------------------------------------------------------------------- TensorProto


@pytest.mark.parametrize("values, shape", [
    ([b"a", b"", b"\xff\x00", b"x\x00"], (2, 2)),
    ([], (0, 3)),
    ([b"abc"], ()),
    (["é".encode(), b"k"], (1, 2)),
])
def test_bytes_decoding_matches_the_object_array_route(values, shape):
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=values)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    ours, reference = to_bytes_array(proto), tf.make_ndarray(proto).astype(np.bytes_)
    assert ours.dtype == reference.dtype and ours.shape == reference.shape
    assert ours.tolist() == reference.tolist()


def test_bytes_decoding_broadcasts_one_value_like_tensorflow():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"k"])
    proto.tensor_shape.dim.add().size = 3
    assert to_bytes_array(proto).tolist() == [b"k", b"k", b"k"]


def test_element_count_is_exact_where_int64_would_wrap():
    assert element_count([]) == 1 and element_count([0, 5]) == 0 and element_count([2, 3, 4]) == 24
    assert element_count([2**40, 2**40]) == 2**80


# ------------------------------------------------------------------------- worker pool


def test_worker_pool_returns_results_and_exceptions():
    pool = LifoWorkerPool(max_workers=2)
    try:
        assert pool.submit(lambda a, b=0: a + b, 2, b=3).result(timeout=5) == 5
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(timeout=5)
        assert list(pool.map(lambda value: value * 2, range(5), timeout=5)) == [0, 2, 4, 6, 8]
    finally:
        pool.shutdown()


def test_worker_pool_reuses_the_last_idle_thread_at_low_load():
    pool = LifoWorkerPool(max_workers=8)
    try:
        names = set()
        for _ in range(20):
            names.add(pool.submit(lambda: threading.current_thread().name).result(timeout=5))
            time.sleep(0.002)  # the worker goes idle before the next call
        assert len(names) == 1
    finally:
        pool.shutdown()


def test_worker_pool_runs_up_to_max_workers_at_once_and_queues_the_rest():
    pool = LifoWorkerPool(max_workers=3, thread_name_prefix="probe")
    release, lock = threading.Event(), threading.Lock()
    running, most = [0], [0]

    def blocked():
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(5)
        with lock:
            running[0] -= 1
        return threading.current_thread().name

    try:
        calls = [pool.submit(blocked) for _ in range(7)]
        deadline = time.monotonic() + 5
        while most[0] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert most[0] == 3 and sum(call.done() for call in calls) == 0
        release.set()
        names = {call.result(timeout=5) for call in calls}
        assert most[0] == 3 and len(names) == 3 and all(name.startswith("probe_") for name in names)
    finally:
        pool.shutdown()


def test_worker_pool_shutdown_finishes_queued_calls_refuses_new_ones_and_can_cancel():
    pool = LifoWorkerPool(max_workers=1)
    gate = threading.Event()
    first = pool.submit(gate.wait, 5)
    queued = [pool.submit(lambda value=value: value) for value in range(3)]
    gate.set()
    pool.shutdown(wait=True)
    assert first.result() is True and [call.result() for call in queued] == [0, 1, 2]
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)

    pool = LifoWorkerPool(max_workers=1)
    gate = threading.Event()
    first = pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert first.result(timeout=5) is True and queued.cancelled()
    assert isinstance(pool, futures.Executor)
