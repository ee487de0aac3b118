"""Python client for troupe serving nodes (pyzmq + numpy). See Client."""

from .client import Client, InferResult, TroupeError
from . import troupe_pb2

ErrorCode = troupe_pb2.ErrorCode

__all__ = ["Client", "InferResult", "TroupeError", "ErrorCode", "troupe_pb2"]
__version__ = "0.1.0"
