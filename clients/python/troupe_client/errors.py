"""Typed errors of the troupe client. Every error is a TroupeError with `code` (a
troupe.v1.ErrorCode number), `code_name` ("OVERLOADED", ...), `message` and `request_id`; its class
says what to do about it:

    TroupeError
    ├── InvalidArgument      INVALID_ARGUMENT: fix the request (shape, dtype, missing tensor)
    │   └── Unsupported      UNSUPPORTED: valid, but not something this model/node takes
    ├── NotFound             NOT_FOUND: no such model or version
    ├── DeadlineExceeded     DEADLINE_EXCEEDED: the request's timeout passed (on the node, or no
    │                        reply came within the client's timeout)
    ├── Unavailable          UNAVAILABLE: not ready, draining, worker failed, or the node cannot
    │                        be reached; retryable
    ├── Overloaded           OVERLOADED: a queue is full; retryable, with backoff
    ├── Cancelled            CANCELLED: the node stopped, or the client was closed
    └── ServerError          INTERNAL, INVALID_MODEL, IO_ERROR, OUT_OF_MEMORY, DEVICE_ERROR: the
                             node or the model failed, not the request
"""

from . import troupe_pb2 as pb


class TroupeError(Exception):
    """A typed error from the node (or the client)."""

    retryable = False  # whether the same request may succeed if sent again later

    def __init__(self, code, message, request_id=""):
        self.code = int(code)
        self.code_name = pb.ErrorCode.Name(self.code) if self.code in pb.ErrorCode.values() else str(code)
        self.message = message
        self.request_id = request_id
        super().__init__(f"{self.code_name}: {message}")


class InvalidArgument(TroupeError):
    pass


class Unsupported(InvalidArgument):
    pass


class NotFound(TroupeError):
    pass


class DeadlineExceeded(TroupeError):
    pass


class Unavailable(TroupeError):
    retryable = True


class Overloaded(TroupeError):
    retryable = True


class Cancelled(TroupeError):
    pass


class ServerError(TroupeError):
    pass


_BY_CODE = {
    pb.INVALID_ARGUMENT: InvalidArgument,
    pb.UNSUPPORTED: Unsupported,
    pb.NOT_FOUND: NotFound,
    pb.DEADLINE_EXCEEDED: DeadlineExceeded,
    pb.UNAVAILABLE: Unavailable,
    pb.OVERLOADED: Overloaded,
    pb.CANCELLED: Cancelled,
    pb.INTERNAL: ServerError,
    pb.INVALID_MODEL: ServerError,
    pb.IO_ERROR: ServerError,
    pb.OUT_OF_MEMORY: ServerError,
    pb.DEVICE_ERROR: ServerError,
}


def error_for(code, message, request_id=""):
    """The TroupeError subclass for an error code (TroupeError itself for a code it does not know)."""
    return _BY_CODE.get(int(code), TroupeError)(code, message, request_id)
