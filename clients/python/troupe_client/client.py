"""A client for troupe serving nodes: one ZeroMQ DEALER connection, many requests in flight.

The socket belongs to one background I/O thread (ZeroMQ sockets are not thread-safe); callers on
any thread hand it requests through a queue and get `concurrent.futures.Future`s back. Replies may
arrive in any order; they are matched to their futures by request id. The protocol is
docs/protocol.md in the troupe repository.
"""

import itertools
import os
import queue
import threading
from concurrent.futures import Future

import numpy as np
import zmq

from . import troupe_pb2 as pb

# proto DataType (ONNX TensorProto numbers) <-> numpy. BFLOAT16 has no numpy type: its raw 16-bit
# words travel as uint16 (send uint16 arrays for bfloat16 inputs; outputs come back as uint16).
_TO_NUMPY = {
    pb.FLOAT: np.float32, pb.DOUBLE: np.float64, pb.FLOAT16: np.float16, pb.BFLOAT16: np.uint16,
    pb.INT8: np.int8, pb.UINT8: np.uint8, pb.INT16: np.int16, pb.UINT16: np.uint16,
    pb.INT32: np.int32, pb.UINT32: np.uint32, pb.INT64: np.int64, pb.UINT64: np.uint64,
    pb.BOOL: np.bool_,
}
_FROM_NUMPY = {np.dtype(v).str: k for k, v in _TO_NUMPY.items() if k != pb.BFLOAT16}


class TroupeError(Exception):
    """A typed error from the node (or the client): `code` is a troupe.v1.ErrorCode number,
    `code_name` its name ("OVERLOADED", "INVALID_ARGUMENT", ...)."""

    def __init__(self, code, message, request_id=""):
        self.code = int(code)
        self.code_name = pb.ErrorCode.Name(self.code) if self.code in pb.ErrorCode.values() else str(code)
        self.message = message
        self.request_id = request_id
        super().__init__(f"{self.code_name}: {message}")


class InferResult:
    """A successful reply. `outputs` maps output names to numpy arrays; they are read-only views of
    the received frames (copy one to modify it)."""

    __slots__ = ("id", "model", "version", "outputs", "batch_size", "timings")

    def __init__(self, reply, frames):
        r = reply.infer
        self.id = reply.id
        self.model = r.model
        self.version = r.version
        self.batch_size = r.batch_size
        self.timings = {"queue_us": r.timings.queue_us, "compute_us": r.timings.compute_us,
                        "total_us": r.timings.total_us}
        if len(frames) != len(r.outputs):
            raise TroupeError(pb.INTERNAL, f"reply lists {len(r.outputs)} outputs but carries {len(frames)} frames",
                              reply.id)
        self.outputs = {}
        for desc, frame in zip(r.outputs, frames):
            if desc.dtype not in _TO_NUMPY:
                raise TroupeError(pb.UNSUPPORTED, f"output '{desc.name}' has an unknown dtype {desc.dtype}", reply.id)
            dt = np.dtype(_TO_NUMPY[desc.dtype])
            buf = frame.buffer if hasattr(frame, "buffer") else frame
            arr = np.frombuffer(buf, dtype=dt)
            shape = tuple(desc.shape)
            if arr.size != int(np.prod(shape, dtype=np.int64)):
                raise TroupeError(pb.INTERNAL, f"output '{desc.name}' frame does not match shape {shape}", reply.id)
            self.outputs[desc.name] = arr.reshape(shape)


def _encode_array(a):
    a = np.asarray(a)
    if not a.flags.c_contiguous:  # (ascontiguousarray would also turn a 0-d array into 1-d)
        a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and np.little_endian is False):
        a = a.astype(a.dtype.newbyteorder("<"))
    key = a.dtype.str if a.dtype != np.bool_ else np.dtype(np.bool_).str
    if key not in _FROM_NUMPY:
        raise TypeError(f"unsupported input dtype {a.dtype}")
    return a, _FROM_NUMPY[key]


class Client:
    """Connects to a troupe node.

        with Client("tcp://127.0.0.1:5555") as c:
            y = c.infer("mlp", {"x": x})["y"]
            futures = [c.submit("mlp", {"x": xi}) for xi in xs]   # all in flight at once
            ys = [f.result().outputs["y"] for f in futures]
    """

    def __init__(self, address="tcp://127.0.0.1:5555", context=None):
        self.address = address
        self._context = context or zmq.Context.instance()
        self._outgoing = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._pending = {}  # id -> (future, kind); touched by the I/O thread only
        self._ids = itertools.count(1)
        self._closed = False
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="troupe-client-io", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error:
            raise self._error

    # ---- public API ------------------------------------------------------------------------------

    def submit(self, model, inputs, *, version=0, outputs=None, priority=0, timeout_ms=0, routing_key="",
               parameters=None, request_id=None):
        """Sends one inference request; returns a Future whose result is an InferResult (or whose
        exception is a TroupeError)."""
        msg = pb.ClientMessage()
        req = msg.infer
        req.model = model
        req.version = int(version)
        req.priority = int(priority)
        req.timeout_us = int(timeout_ms * 1000)
        req.routing_key = routing_key
        for k, v in (parameters or {}).items():
            req.parameters[str(k)] = str(v)
        for name in outputs or ():
            req.outputs.append(name)
        frames = []
        for name, array in inputs.items():
            a, dt = _encode_array(array)
            d = req.inputs.add()
            d.name = name
            d.dtype = dt
            d.shape.extend(int(x) for x in a.shape)
            frames.append(a)
        return self._enqueue(msg, frames, "infer", request_id)

    def infer(self, model, inputs, *, wait=None, **kwargs):
        """Runs one request and returns its outputs {name: array}; raises TroupeError."""
        return self.submit(model, inputs, **kwargs).result(wait).outputs

    def metadata(self, model, version=0, wait=30):
        msg = pb.ClientMessage()
        msg.metadata.model = model
        msg.metadata.version = int(version)
        md = self._enqueue(msg, [], "metadata", None).result(wait)
        spec = lambda s: {"name": s.name, "dtype": np.dtype(_TO_NUMPY.get(s.dtype, np.uint8)), "shape": list(s.shape)}
        return {"name": md.name, "version": md.version, "versions": list(md.versions),
                "max_batch_size": md.max_batch_size, "state": pb.ModelState.Name(md.state),
                "inputs": [spec(s) for s in md.inputs], "outputs": [spec(s) for s in md.outputs]}

    def health(self, wait=30):
        msg = pb.ClientMessage()
        msg.health.SetInParent()
        h = self._enqueue(msg, [], "health", None).result(wait)
        return {"live": h.live, "ready": h.ready, "draining": h.draining, "reason": h.reason,
                "models": [{"model": m.model, "version": m.version, "state": pb.ModelState.Name(m.state),
                            "error": m.error.message} for m in h.models]}

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- the I/O thread ----------------------------------------------------------------------------

    def _enqueue(self, msg, frames, kind, request_id):
        future = Future()
        rid = str(request_id) if request_id is not None else f"py-{next(self._ids)}"
        msg.id = rid
        if kind == "infer":
            msg.infer.id = rid
        with self._lock:
            if self._closed:
                raise TroupeError(pb.CANCELLED, "the client is closed")
            self._outgoing.put((rid, future, kind, [msg.SerializeToString()] + frames))
        self._wake()
        return future

    def _wake(self):
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _run(self):
        try:
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.connect(self.address)
        except zmq.ZMQError as e:
            self._error = TroupeError(pb.INVALID_ARGUMENT, f"cannot connect to {self.address}: {e}")
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll(200))
                if self._wake_r in events:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                self._send_pending(sock)
                if sock in events:
                    self._receive_all(sock)
                if self._closed:
                    break
        finally:
            for rid, (future, _) in list(self._pending.items()):
                if not future.done():
                    future.set_exception(TroupeError(pb.CANCELLED, "the client was closed before the reply came", rid))
            self._pending.clear()
            sock.close(0)

    def _send_pending(self, sock):
        while True:
            try:
                rid, future, kind, frames = self._outgoing.get_nowait()
            except queue.Empty:
                return
            if rid in self._pending:
                future.set_exception(ValueError(f"request id '{rid}' is already in flight"))
                continue
            self._pending[rid] = (future, kind)
            # copy=False: large arrays are sent from their own memory (pyzmq keeps them alive).
            sock.send_multipart(frames, copy=False)

    def _receive_all(self, sock):
        while True:
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if frames and len(frames[0].bytes) == 0 and len(frames) > 1:
                frames = frames[1:]  # a REQ-style delimiter (not sent to DEALERs, but harmless)
            reply = pb.ServerMessage()
            try:
                reply.ParseFromString(frames[0].bytes)
            except Exception:  # noqa: BLE001 - a corrupt reply cannot be matched to a request
                continue
            entry = self._pending.pop(reply.id, None)
            if entry is None:
                continue  # an answer to a request we no longer wait for
            future, kind = entry
            if reply.HasField("error"):
                future.set_exception(TroupeError(reply.error.code, reply.error.message, reply.id))
            elif kind == "infer" and reply.HasField("infer"):
                try:
                    future.set_result(InferResult(reply, frames[1:]))
                except TroupeError as e:
                    future.set_exception(e)
            elif kind == "metadata" and reply.HasField("metadata"):
                future.set_result(reply.metadata)
            elif kind == "health" and reply.HasField("health"):
                future.set_result(reply.health)
            else:
                future.set_exception(TroupeError(pb.INTERNAL, f"unexpected reply kind for a {kind} request", reply.id))
