"""The Python client against a fake node (a ROUTER socket in a thread speaking docs/protocol.md):
framing, dtypes, many requests in flight with replies out of order, typed errors, timeouts and an
unreachable node, metadata and health, and that the generated troupe_pb2.py matches
proto/troupe.proto."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import troupe_client  # noqa: E402
from troupe_client import (Client, DeadlineExceeded, InvalidArgument, NotFound, Overloaded,  # noqa: E402
                           ServerError, TroupeError, Unavailable, Unsupported, troupe_pb2 as pb)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


class FakeNode:
    """Echoes every input back as output "<name>_out" (same dtype/shape/bytes). Requests for model
    "overloaded" get an OVERLOADED error, for model "error:CODE_NAME" that error. With `hold=n`,
    replies wait until n requests arrived and then go out in reverse order."""

    def __init__(self, hold=0):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.hold = hold
        self.seen = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def reply_for(self, frames):
        identity, env, tensors = frames[0], frames[1], frames[2:]
        msg = pb.ClientMessage.FromString(env)
        self.seen.append(msg)
        out = pb.ServerMessage(id=msg.id)
        kind = msg.WhichOneof("kind")
        if kind == "health":
            out.health.live = True
            out.health.ready = True
            return [identity, out.SerializeToString()]
        if kind == "metadata":
            out.metadata.name = msg.metadata.model
            out.metadata.version = 3
            s = out.metadata.inputs.add(name="x", dtype=pb.FLOAT)
            s.shape.extend([-1, 4])
            return [identity, out.SerializeToString()]
        if msg.infer.model == "overloaded":
            out.error.code = pb.OVERLOADED
            out.error.message = "queue full"
            return [identity, out.SerializeToString()]
        if msg.infer.model.startswith("error:"):
            out.error.code = pb.ErrorCode.Value(msg.infer.model[len("error:"):])
            out.error.message = "as asked"
            return [identity, out.SerializeToString()]
        out.infer.model = msg.infer.model
        out.infer.version = 1
        out.infer.batch_size = len(tensors)
        for d in msg.infer.inputs:
            o = out.infer.outputs.add(name=d.name + "_out", dtype=d.dtype)
            o.shape.extend(d.shape)
        return [identity, out.SerializeToString()] + list(tensors)

    def run(self):
        held = []
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stop.is_set():
            if not poller.poll(50):
                continue
            frames = self.sock.recv_multipart()
            reply = self.reply_for(frames)
            if self.hold:
                held.append(reply)
                if len(held) == self.hold:
                    for r in reversed(held):
                        self.sock.send_multipart(r)
                    held = []
            else:
                self.sock.send_multipart(reply)

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close(0)


@pytest.fixture
def node():
    n = FakeNode()
    yield n
    n.close()


def test_roundtrip_every_dtype(node):
    rng = np.random.default_rng(0)
    inputs = {
        "f32": rng.standard_normal((2, 3)).astype(np.float32),
        "f64": rng.standard_normal((4,)),
        "f16": rng.standard_normal((1, 2, 2)).astype(np.float16),
        "i64": rng.integers(-5, 5, (3, 1)),
        "i32": rng.integers(-5, 5, (2,), dtype=np.int32),
        "u8": rng.integers(0, 255, (5,), dtype=np.uint8),
        "b": rng.random((2, 2)) > 0.5,
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 3), np.float32),
    }
    with Client(node.address) as c:
        out = c.infer("echo", inputs, wait=10)
    assert set(out) == {k + "_out" for k in inputs}
    for k, v in inputs.items():
        got = out[k + "_out"]
        assert got.dtype == np.asarray(v).dtype, k
        assert got.shape == np.asarray(v).shape, k
        np.testing.assert_array_equal(got, v)
    env = node.seen[0].infer
    assert [d.dtype for d in env.inputs][:3] == [pb.FLOAT, pb.DOUBLE, pb.FLOAT16]


def test_non_contiguous_and_big_endian_inputs_are_sent_as_little_endian_rows(node):
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T  # non-contiguous
    b = np.arange(4, dtype=">i8")
    with Client(node.address) as c:
        out = c.infer("echo", {"a": a, "b": b}, wait=10)
    np.testing.assert_array_equal(out["a_out"], a)
    np.testing.assert_array_equal(out["b_out"], b.astype("<i8"))


def test_many_in_flight_with_out_of_order_replies():
    n = FakeNode(hold=16)
    try:
        with Client(n.address) as c:
            xs = [np.full((1, 2), i, np.float32) for i in range(16)]
            futures = [c.submit("echo", {"x": x}) for x in xs]
            for i, f in enumerate(futures):
                np.testing.assert_array_equal(f.result(10).outputs["x_out"], xs[i])
        assert len(n.seen) == 16
        assert len({m.id for m in n.seen}) == 16
    finally:
        n.close()


def test_submit_from_many_threads(node):
    with Client(node.address) as c:
        results = {}

        def work(t):
            x = np.full((2,), t, np.int64)
            results[t] = c.submit("echo", {"x": x}).result(10).outputs["x_out"]

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == list(range(8))
    for t, v in results.items():
        np.testing.assert_array_equal(v, [t, t])


def test_typed_errors(node):
    with Client(node.address) as c:
        with pytest.raises(TroupeError) as e:
            c.infer("overloaded", {"x": np.zeros(1, np.float32)}, wait=10)
    assert e.value.code == pb.OVERLOADED
    assert e.value.code_name == "OVERLOADED"
    assert "queue full" in str(e.value)


@pytest.mark.parametrize("code,cls", [
    ("INVALID_ARGUMENT", InvalidArgument), ("UNSUPPORTED", Unsupported), ("NOT_FOUND", NotFound),
    ("DEADLINE_EXCEEDED", DeadlineExceeded), ("UNAVAILABLE", Unavailable), ("OVERLOADED", Overloaded),
    ("CANCELLED", troupe_client.Cancelled), ("INTERNAL", ServerError), ("DEVICE_ERROR", ServerError),
    ("OUT_OF_MEMORY", ServerError), ("INVALID_MODEL", ServerError), ("IO_ERROR", ServerError)])
def test_every_error_code_has_its_class(node, code, cls):
    with Client(node.address) as c:
        with pytest.raises(cls) as e:
            c.infer("error:" + code, {"x": np.zeros(1, np.float32)})
    assert type(e.value) is cls and isinstance(e.value, TroupeError)
    assert e.value.code_name == code and e.value.message == "as asked"
    assert e.value.retryable == (code in ("UNAVAILABLE", "OVERLOADED"))
    assert issubclass(Unsupported, InvalidArgument)


def test_default_timeout():
    assert troupe_client.DEFAULT_TIMEOUT_S == 30
    n = FakeNode()
    try:
        with Client(n.address) as c:
            assert c.timeout == 30
        with Client(n.address, timeout=2.5) as c:
            assert c.timeout == 2.5
    finally:
        n.close()


def closed_port_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed


def test_unreachable_node_is_a_clear_error():
    address = closed_port_address()
    with Client(address, timeout=0.3) as c:
        start = time.monotonic()
        with pytest.raises(Unavailable) as e:
            c.health()
        assert time.monotonic() - start < 5
        with pytest.raises(Unavailable):
            c.infer("mlp", {"x": np.zeros(1, np.float32)})
    assert f"cannot reach the node at {address}" in e.value.message
    assert e.value.retryable


def test_node_that_does_not_answer_is_a_deadline():
    n = FakeNode(hold=1000)  # connected, never replies
    try:
        with Client(n.address) as c:
            with pytest.raises(DeadlineExceeded) as e:
                c.infer("echo", {"x": np.zeros(1, np.float32)}, timeout=0.3)
            assert f"the node at {n.address} did not answer" in e.value.message
            # `wait`, the older name, still works the same way.
            with pytest.raises(DeadlineExceeded):
                c.health(wait=0.3)
    finally:
        n.close()


def test_a_late_reply_after_the_timeout_is_dropped():
    n = FakeNode(hold=2)  # the two replies go out together, once the second request arrives
    try:
        with Client(n.address) as c:
            first = c.submit("echo", {"x": np.zeros(1, np.float32)}, timeout=0.2)
            with pytest.raises(DeadlineExceeded):
                first.result(10)
            second = c.submit("echo", {"x": np.ones(1, np.float32)}, timeout=10)
            np.testing.assert_array_equal(second.result(10).outputs["x_out"], [1])
    finally:
        n.close()


def test_invalid_address_is_an_invalid_argument():
    with pytest.raises(InvalidArgument):
        Client("not-an-endpoint")


def test_request_fields_reach_the_envelope(node):
    with Client(node.address) as c:
        c.infer("echo", {"x": np.zeros(1, np.float32)}, version=2, priority=1, timeout_ms=1.5, routing_key="k",
                parameters={"a": "b"}, outputs=["x"], request_id="my-id", wait=10)
    r = node.seen[0].infer
    assert (r.model, r.version, r.priority, r.timeout_us, r.routing_key) == ("echo", 2, 1, 1500, "k")
    assert dict(r.parameters) == {"a": "b"}
    assert list(r.outputs) == ["x"]
    assert r.id == "my-id" and node.seen[0].id == "my-id"


def test_metadata_and_health(node):
    with Client(node.address) as c:
        md = c.metadata("mlp")
        h = c.health()
    assert md["name"] == "mlp" and md["version"] == 3
    assert md["inputs"][0]["shape"] == [-1, 4]
    assert md["inputs"][0]["dtype"] == np.float32
    assert h["live"] and h["ready"]


def test_close_cancels_what_is_pending():
    n = FakeNode(hold=1000)  # never replies
    try:
        c = Client(n.address)
        f = c.submit("echo", {"x": np.zeros(1, np.float32)})
        c.close()
        with pytest.raises(TroupeError) as e:
            f.result(10)
        assert e.value.code_name == "CANCELLED"
    finally:
        n.close()


def test_unsupported_input_dtype_is_refused_before_sending(node):
    with Client(node.address) as c:
        with pytest.raises(TypeError):
            c.submit("echo", {"x": np.array(["a"])})


@pytest.mark.skipif(shutil.which("protoc") is None, reason="protoc not installed")
def test_generated_module_matches_the_proto():
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["protoc", "-I" + os.path.join(REPO, "proto"), "--python_out=" + d,
                        os.path.join(REPO, "proto", "troupe.proto")], check=True)
        fresh = open(os.path.join(d, "troupe_pb2.py")).read()
    committed = open(os.path.join(REPO, "clients", "python", "troupe_client", "troupe_pb2.py")).read()
    assert fresh == committed, "regenerate: protoc -Iproto --python_out=clients/python/troupe_client proto/troupe.proto"
