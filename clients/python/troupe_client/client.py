"""A client for troupe serving nodes: ZeroMQ DEALER connections, many requests in flight.

The sockets belong to one background I/O thread (ZeroMQ sockets are not thread-safe); callers on
any thread hand it requests through a queue and get `concurrent.futures.Future`s back. Replies may
arrive in any order; they are matched to their futures by request id. The protocol is
docs/protocol.md in the troupe repository.

Several endpoints (nodes serving the same models) may be given: requests go to the first one that
is connected, in the order given. When its connection drops, the requests waiting on it are sent
again, with the same ids, to the next connected endpoint, and later ones go there too; a node that
comes back is preferred again for new requests. With several endpoints the client also probes each
connected node's health every `heartbeat` seconds: a node that answers nothing (no probe, no
reply) for `heartbeat_timeout` seconds while its connection stays open (hung, stopped, its host
cut off) is treated as lost the same way, until it answers again. A request is answered to its
caller once: a late second reply (the lost node had answered after all) is dropped. A request sent
again may have run on the lost node too: at-least-once execution, exactly-once replies.

Every request has a client-side timeout (DEFAULT_TIMEOUT_S unless the Client or the call says
otherwise): ZeroMQ connects in the background and queues requests for a node that is not there, so
without one a wrong address would wait forever. When it passes, the request fails with Unavailable
if the connection to the node was never made (or was lost), else with DeadlineExceeded; errors are
typed (troupe_client.errors).
"""

import collections
import itertools
import os
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from . import troupe_pb2 as pb
from .errors import DeadlineExceeded, InvalidArgument, TroupeError, Unavailable, error_for

DEFAULT_TIMEOUT_S = 30.0  # a request's client-side timeout unless the Client or the call sets one
_DEFAULT = object()  # "the Client's timeout" as an argument default
_HEARTBEAT_ID = "troupe-client.heartbeat."  # ids of the health probes of several endpoints

# proto DataType (ONNX TensorProto numbers) <-> numpy. BFLOAT16 has no numpy type: its raw 16-bit
# words travel as uint16 (send uint16 arrays for bfloat16 inputs; outputs come back as uint16).
_TO_NUMPY = {
    pb.FLOAT: np.float32, pb.DOUBLE: np.float64, pb.FLOAT16: np.float16, pb.BFLOAT16: np.uint16,
    pb.INT8: np.int8, pb.UINT8: np.uint8, pb.INT16: np.int16, pb.UINT16: np.uint16,
    pb.INT32: np.int32, pb.UINT32: np.uint32, pb.INT64: np.int64, pb.UINT64: np.uint64,
    pb.BOOL: np.bool_,
}
_FROM_NUMPY = {np.dtype(v).str: k for k, v in _TO_NUMPY.items() if k != pb.BFLOAT16}


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
            raise error_for(pb.INTERNAL, f"reply lists {len(r.outputs)} outputs but carries {len(frames)} frames",
                              reply.id)
        self.outputs = {}
        for desc, frame in zip(r.outputs, frames):
            if desc.dtype not in _TO_NUMPY:
                raise error_for(pb.UNSUPPORTED, f"output '{desc.name}' has an unknown dtype {desc.dtype}", reply.id)
            dt = np.dtype(_TO_NUMPY[desc.dtype])
            buf = frame.buffer if hasattr(frame, "buffer") else frame
            arr = np.frombuffer(buf, dtype=dt)
            shape = tuple(desc.shape)
            if arr.size != int(np.prod(shape, dtype=np.int64)):
                raise error_for(pb.INTERNAL, f"output '{desc.name}' frame does not match shape {shape}", reply.id)
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

    `timeout` (seconds, default DEFAULT_TIMEOUT_S; None: no limit) bounds the wait for each reply;
    each call may pass its own.
    """

    def __init__(self, address="tcp://127.0.0.1:5555", context=None, timeout=DEFAULT_TIMEOUT_S,
                 heartbeat=1.0, heartbeat_timeout=3.0):
        # One endpoint, several separated by commas, or a list of them (failover order).
        if isinstance(address, str):
            self.addresses = [a.strip() for a in address.split(",") if a.strip()]
        else:
            self.addresses = [str(a) for a in address]
        if not self.addresses:
            raise InvalidArgument(pb.INVALID_ARGUMENT, "no endpoint to connect to")
        self.address = ",".join(self.addresses)
        self.timeout = timeout
        self._context = context or zmq.Context.instance()
        self._outgoing = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        # id -> [future, kind, deadline, timeout, frames, endpoint index or None (not sent yet)];
        # touched by the I/O thread only.
        self._pending = {}
        self._unsent = collections.deque()  # ids whose entry has no endpoint: _send_unsent's work
        self._connected = [False] * len(self.addresses)  # per endpoint (socket monitors)
        # Heartbeats (several endpoints): per endpoint, whether it answers, when it last did, and
        # when the probe now out was sent (None: none out).
        self.heartbeat = float(heartbeat)
        self.heartbeat_timeout = float(heartbeat_timeout)
        self._responsive = [True] * len(self.addresses)
        self._last_heard = [0.0] * len(self.addresses)
        self._probe_sent = [None] * len(self.addresses)
        self._probes = itertools.count(1)
        self._ever_connected = False
        self._failovers = 0  # requests sent again after their endpoint was lost
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

    @property
    def failovers(self):
        """Requests sent again to another endpoint after theirs was lost, so far."""
        return self._failovers

    # ---- public API ------------------------------------------------------------------------------

    def submit(self, model, inputs, *, version=0, outputs=None, priority=0, timeout_ms=0, routing_key="",
               parameters=None, request_id=None, timeout=_DEFAULT):
        """Sends one inference request; returns a Future whose result is an InferResult (or whose
        exception is a TroupeError). `timeout_ms` is the node's deadline for the request (0: none);
        `timeout` (seconds) how long the client waits for the reply."""
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
        return self._enqueue(msg, frames, "infer", request_id, timeout)

    def infer(self, model, inputs, *, timeout=_DEFAULT, wait=None, **kwargs):
        """Runs one request and returns its outputs {name: array}; raises TroupeError. `wait` is
        the older name of `timeout`."""
        # The future completes by the request's deadline (the I/O thread expires it).
        return self.submit(model, inputs, timeout=_pick(timeout, wait), **kwargs).result().outputs

    def metadata(self, model, version=0, timeout=_DEFAULT, wait=None):
        msg = pb.ClientMessage()
        msg.metadata.model = model
        msg.metadata.version = int(version)
        md = self._enqueue(msg, [], "metadata", None, _pick(timeout, wait)).result()
        spec = lambda s: {"name": s.name, "dtype": np.dtype(_TO_NUMPY.get(s.dtype, np.uint8)), "shape": list(s.shape)}
        return {"name": md.name, "version": md.version, "versions": list(md.versions),
                "max_batch_size": md.max_batch_size, "state": pb.ModelState.Name(md.state),
                "inputs": [spec(s) for s in md.inputs], "outputs": [spec(s) for s in md.outputs]}

    def health(self, timeout=_DEFAULT, wait=None):
        msg = pb.ClientMessage()
        msg.health.SetInParent()
        h = self._enqueue(msg, [], "health", None, _pick(timeout, wait)).result()
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

    def _enqueue(self, msg, frames, kind, request_id, timeout=_DEFAULT):
        timeout = self.timeout if timeout is _DEFAULT else timeout
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        future = Future()
        rid = str(request_id) if request_id is not None else f"py-{next(self._ids)}"
        msg.id = rid
        if kind == "infer":
            msg.infer.id = rid
        with self._lock:
            if self._closed:
                raise error_for(pb.CANCELLED, "the client is closed")
            self._outgoing.put((rid, future, kind, deadline, timeout, [msg.SerializeToString()] + frames))
        self._wake()
        return future

    def _wake(self):
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _run(self):
        socks, monitors = [], []
        try:
            for address in self.addresses:
                sock = self._context.socket(zmq.DEALER)
                socks.append(sock)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, 0)
                sock.setsockopt(zmq.RCVHWM, 0)
                # Connection events tell "the node cannot be reached" from "the node did not
                # answer", and drive the failover; the monitor must exist before connect() to see
                # the first connection.
                monitors.append(sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED))
                sock.connect(address)
        except zmq.ZMQError as e:
            self._error = InvalidArgument(pb.INVALID_ARGUMENT, f"cannot connect to {self.address}: {e}")
            for s in monitors + socks:
                s.close(0)
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        for s in socks + monitors:
            poller.register(s, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while True:
                events = dict(poller.poll(self._poll_ms()))
                for i, monitor in enumerate(monitors):
                    if monitor in events:
                        self._read_monitor(i, monitor)
                if self._wake_r in events:
                    try:
                        while os.read(self._wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                self._take_outgoing()
                for i, sock in enumerate(socks):
                    if sock in events:
                        self._receive_all(i, sock)
                if len(socks) > 1:
                    self._heartbeats(socks, time.monotonic())
                self._send_unsent(socks)
                self._expire(time.monotonic())
                if self._closed:
                    break
        finally:
            for rid, (future, *_) in list(self._pending.items()):
                if not future.done():
                    future.set_exception(error_for(pb.CANCELLED, "the client was closed before the reply came", rid))
            self._pending.clear()
            for sock, monitor in zip(socks, monitors):
                sock.disable_monitor()
                monitor.close(0)
                sock.close(0)

    def _poll_ms(self):
        """Until the next request deadline, at most 200 ms (heartbeats are checked as often)."""
        deadlines = [p[2] for p in self._pending.values() if p[2] is not None]
        if not deadlines:
            return 200
        return max(0, min(200, int((min(deadlines) - time.monotonic()) * 1000) + 1))

    def _read_monitor(self, index, monitor):
        while True:
            try:
                event = recv_monitor_message(monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_CONNECTED:
                self._connected[index] = self._ever_connected = True
                self._responsive[index] = True
                self._last_heard[index] = time.monotonic()
                self._probe_sent[index] = None
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._connected[index] = False
                self._lose(index)

    def _lose(self, index):
        """What waited on endpoint `index` goes to another one (the next _send_unsent)."""
        for rid, entry in self._pending.items():
            if entry[5] == index:
                entry[5] = None
                self._unsent.append(rid)
                if len(self.addresses) > 1:
                    self._failovers += 1

    def _heartbeats(self, socks, now):
        for i, sock in enumerate(socks):
            if not self._connected[i]:
                continue
            sent = self._probe_sent[i]
            if sent is None and now - self._last_heard[i] >= self.heartbeat:
                probe = pb.ClientMessage()
                probe.id = f"{_HEARTBEAT_ID}{i}.{next(self._probes)}"
                probe.health.SetInParent()
                sock.send(probe.SerializeToString())
                self._probe_sent[i] = now
            elif sent is not None and self._responsive[i] and \
                    now - max(sent, self._last_heard[i]) >= self.heartbeat_timeout:
                # Connected, yet silent: hung, stopped or cut off. Its requests go elsewhere
                # until it answers again (a late probe reply brings it back).
                self._responsive[i] = False
                self._lose(i)

    def _expire(self, now):
        for rid, (future, kind, deadline, timeout, _, _) in list(self._pending.items()):
            if deadline is None or now < deadline:
                continue
            del self._pending[rid]  # a late reply finds no entry and is dropped
            where = f"the node at {self.addresses[0]}" if len(self.addresses) == 1 else \
                f"any of the nodes at {self.address}"
            if not self._ever_connected:
                error = Unavailable(pb.UNAVAILABLE, f"cannot reach {where}: no connection "
                                    f"within {timeout:g} s (is `troupe serve` running there, and is the "
                                    f"address right?)", rid)
            elif not any(self._connected):
                error = Unavailable(pb.UNAVAILABLE, f"lost the connection to {where}; "
                                    f"no reply within {timeout:g} s", rid)
            else:
                error = DeadlineExceeded(pb.DEADLINE_EXCEEDED, f"{where} did not answer "
                                         f"this {kind} request within {timeout:g} s", rid)
            if not future.done():
                future.set_exception(error)

    def _take_outgoing(self):
        while True:
            try:
                rid, future, kind, deadline, timeout, frames = self._outgoing.get_nowait()
            except queue.Empty:
                return
            if rid in self._pending:
                future.set_exception(ValueError(f"request id '{rid}' is already in flight"))
                continue
            self._pending[rid] = [future, kind, deadline, timeout, frames, None]
            self._unsent.append(rid)

    def _send_unsent(self, socks):
        """Sends what no connected endpoint has: to the first connected one in the order given.
        With one endpoint, requests go to its socket at once (ZeroMQ queues them until it
        connects, as a single connection always did)."""
        if len(socks) == 1:
            target = 0
        else:
            target = next((i for i, up in enumerate(self._connected) if up and self._responsive[i]), None)
            if target is None:
                return  # kept until an endpoint connects, or their deadline
        while self._unsent:
            entry = self._pending.get(self._unsent.popleft())
            if entry is None or entry[5] is not None:
                continue  # answered or expired meanwhile
            entry[5] = target
            # copy=False: large arrays are sent from their own memory (pyzmq keeps them alive).
            socks[target].send_multipart(entry[4], copy=False)

    def _receive_all(self, index, sock):
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
            # Anything from a node says it is alive; a heartbeat reply says nothing else.
            self._last_heard[index] = time.monotonic()
            self._responsive[index] = True
            if reply.id.startswith(_HEARTBEAT_ID):
                self._probe_sent[index] = None
                continue
            entry = self._pending.pop(reply.id, None)
            if entry is None:
                continue  # an answer to a request we no longer wait for (or answered already)
            future, kind = entry[0], entry[1]
            if reply.HasField("error"):
                future.set_exception(error_for(reply.error.code, reply.error.message, reply.id))
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
                future.set_exception(error_for(pb.INTERNAL, f"unexpected reply kind for a {kind} request", reply.id))


def _pick(timeout, wait):
    """`wait`, the older name of `timeout`, when given."""
    return timeout if wait is None else wait
