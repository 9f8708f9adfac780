"""What every component shares: artifacts and the declaration of a stage.

A component module defines one ``ComponentSpec`` named ``SPEC``: its inputs
and outputs by artifact type, and an ``executor`` function
``executor(inputs, outputs, params) -> None``. ``inputs`` and ``outputs`` map
names to :class:`Artifact`; an executor writes only below its outputs' URIs
and may add to their ``properties``. The runner owns where URIs point and
publishes outputs atomically, so executors never see each other's temporary
state.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

from musicrec.atomic import write_json_atomic  # noqa: F401  (re-exported for components)


@dataclasses.dataclass
class Artifact:
    """A typed output of one stage, living at ``uri``.

    ``mlmd_id`` is the artifact's id in ML Metadata once the runner has
    recorded it (``None`` before, and for runs without a metadata store).
    """

    type_name: str
    uri: str
    properties: dict[str, Any] = dataclasses.field(default_factory=dict)
    mlmd_id: int | None = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.uri, *parts)


def given_params(params: Mapping[str, Any], *as_is: str, **convert: Callable[[Any], Any]) -> dict[str, Any]:
    """The params named in ``as_is`` and ``convert`` that ``params`` holds; those in ``convert``
    passed through their converter.

    For keyword arguments: a param left out is left out of the call, so the
    callee's declared default applies and no executor restates it, e.g.
    ``TrainArgs(..., **given_params(params, seed=int))``.
    """
    given = {name: params[name] for name in as_is if name in params}
    given.update({name: to(params[name]) for name, to in convert.items() if name in params})
    return given


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
    """Declared interface of a stage: artifact types in and out, and its executor."""

    name: str
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    executor: Callable[[Mapping[str, Artifact], Mapping[str, Artifact], Mapping[str, Any]], None]
    optional_inputs: frozenset[str] = frozenset()

    def check_inputs(self, inputs: Mapping[str, Artifact]) -> None:
        """Raises ``ValueError`` when an input is missing or of the wrong type."""
        for name, type_name in self.inputs.items():
            if name not in inputs:
                if name in self.optional_inputs:
                    continue
                raise ValueError(f"{self.name}: missing input {name!r} ({type_name})")
            if inputs[name].type_name != type_name:
                raise ValueError(f"{self.name}: input {name!r} is a {inputs[name].type_name}, "
                                 f"expected {type_name}")
        unknown = set(inputs) - set(self.inputs)
        if unknown:
            raise ValueError(f"{self.name}: unknown inputs {sorted(unknown)}")
