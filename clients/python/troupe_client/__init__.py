"""Python client for troupe serving nodes (pyzmq + numpy). See Client; errors are typed (errors.py)."""

from .client import DEFAULT_TIMEOUT_S, Client, InferResult
from .errors import (Cancelled, DeadlineExceeded, InvalidArgument, NotFound, Overloaded, ServerError,
                     TroupeError, Unavailable, Unsupported, error_for)
from . import troupe_pb2

ErrorCode = troupe_pb2.ErrorCode

__all__ = ["Client", "InferResult", "DEFAULT_TIMEOUT_S", "TroupeError", "InvalidArgument", "Unsupported",
           "NotFound", "DeadlineExceeded", "Unavailable", "Overloaded", "Cancelled", "ServerError", "error_for",
           "ErrorCode", "troupe_pb2"]
__version__ = "0.2.0"
