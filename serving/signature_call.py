"""Calling a loaded signature on already-checked arrays, with little Python in between.

``loaded.signatures[key](**tensors)``, what a user writes, binds its keyword
arguments to the structured signature and checks them against the
TensorSpecs on every call: about 0.2 ms of Python per call on this machine,
and ``tf.convert_to_tensor`` adds 0.05–0.1 ms per input. On the serving path
``Servable.prepare`` has already checked the names, dtypes and shapes of the
inputs against the same SignatureDef, so ``SignatureCaller`` skips both:

- each input array becomes an ``EagerTensor`` the way ``tf.convert_to_tensor``
  makes one from an ndarray (``constant_op.convert_to_eager_tensor``), minus
  the defensive copy of a read-only array (a request tensor's bytes, which
  nobody can change);
- the function runs through its *flat* signature: the tensors in the order of
  the function's ``_arg_keywords`` plus its captured inputs, handed to
  ``_call_flat``, exactly what ``ConcreteFunction._call_with_flat_signature``
  (TF's own fallback from the structured call) does after its type checks.

Both use private TensorFlow attributes (pinned TF 2.17). Where a function or
the eager context lacks them, or the signature is not plain keyword tensors,
the call falls back to ``function(**tensors)``; the results are the same
either way (``tests/serving/test_serving_parts.py`` checks flat against keyword calls
on every signature it serves, a multi-input one included). The benchmark's
in-process reference stays the plain keyword call a user would write.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

try:  # private TensorFlow modules; without them every call takes the keyword path
    from tensorflow.python.eager import context as _eager_context
    from tensorflow.python.framework import ops as _ops
except ImportError:  # pragma: no cover - other TF versions
    _eager_context = _ops = None


def _flat_argument_order(function: Any, signature: meta_graph_pb2.SignatureDef) -> list[str] | None:
    """Input aliases in the order of ``function``'s flat signature, or None when unusable."""
    if not all(hasattr(function, name) for name in ("_call_flat", "_arg_keywords", "captured_inputs",
                                                     "structured_input_signature")):
        return None
    try:
        args, kwargs = function.structured_input_signature
    except (TypeError, ValueError):
        return None
    aliases = set(signature.inputs)
    if args or not isinstance(kwargs, dict) or set(kwargs) != aliases:
        return None
    for alias, spec in kwargs.items():
        if not isinstance(spec, tf.TensorSpec) or spec.dtype.as_datatype_enum != signature.inputs[alias].dtype:
            return None
    order = [keyword.decode() if isinstance(keyword, bytes) else str(keyword) for keyword in function._arg_keywords]
    if len(order) != len(aliases) or set(order) != aliases:
        return None
    return order


class SignatureCaller:
    """Runs one loaded signature function on input arrays checked against its SignatureDef.

    Parameters
    ----------
    function : ConcreteFunction
        ``loaded.signatures[key]``.
    signature : SignatureDef
        The same signature as stored in ``saved_model.pb``.
    use_flat_call : bool
        False forces the plain keyword call (for tests and comparisons).
    """

    def __init__(self, function: Any, signature: meta_graph_pb2.SignatureDef, use_flat_call: bool = True) -> None:
        self.function = function
        self.dtypes = {alias: tf.dtypes.as_dtype(info.dtype) for alias, info in signature.inputs.items()}
        self._dtype_enums = {alias: info.dtype for alias, info in signature.inputs.items()}
        self.flat_order = _flat_argument_order(function, signature) if use_flat_call else None
        self._direct_tensors = use_flat_call and _ops is not None and hasattr(_ops, "EagerTensor")

    def tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, tf.Tensor]:
        """Input alias → tensor of the signature's dtype.

        Raises
        ------
        TypeError, ValueError
            As ``tf.convert_to_tensor`` raises them for an array that does not
            convert to the dtype.
        """
        context = _eager_context.context() if self._direct_tensors else None
        if context is None or not context.executing_eagerly():
            return {alias: tf.convert_to_tensor(array, dtype=self.dtypes[alias]) for alias, array in arrays.items()}
        context.ensure_initialized()
        device = context.device_name
        tensors = {}
        for alias, array in arrays.items():
            if not isinstance(array, np.ndarray):
                tensors[alias] = tf.convert_to_tensor(array, dtype=self.dtypes[alias])
                continue
            # convert_to_tensor copies so that a later write to the array cannot
            # change the tensor; a read-only array cannot be written.
            owned = array if not array.flags.writeable else array.copy()
            tensors[alias] = _ops.EagerTensor(owned, device, self._dtype_enums[alias])
        return tensors

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the function; every output alias → array (strings as ``object`` bytes).

        Raises
        ------
        tf.errors.OpError
            When the graph fails on these inputs.
        TypeError, ValueError
            When an input does not convert or the function refuses it.
        """
        tensors = self.tensors(arrays)
        if self.flat_order is None:
            results = self.function(**tensors)
        else:
            function = self.function
            results = function._call_flat([tensors[alias] for alias in self.flat_order], function.captured_inputs)
        return {alias: np.asarray(value) for alias, value in results.items()}
