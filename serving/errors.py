"""One error type for the serving stack: a gRPC status code plus its message.

The server raises it internally and turns it into the RPC status; the client
raises it for every failed call, so callers handle one type either way.
"""
from __future__ import annotations

import grpc


class ServingError(Exception):
    """A failed serving call, with the gRPC status it maps to.

    Parameters
    ----------
    code : grpc.StatusCode
        Status of the failed call, e.g. ``grpc.StatusCode.NOT_FOUND``.
    message : str
        Human-readable reason (the RPC's details string).
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class SavedModelError(ValueError):
    """A SavedModel that cannot be loaded, with the status TF Serving reports for it.

    Parameters
    ----------
    code : grpc.StatusCode
        E.g. DATA_LOSS for an unparsable ``saved_model.pb``.
    message : str
        What is wrong, naming the file.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
