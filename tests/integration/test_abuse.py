"""A single client probing a real `troupe serve` cannot make it buffer without bound (docs/protocol.md,
Limits): a frame over `max_message_bytes` is refused by ZeroMQ before it is buffered, a message over
it in smaller frames gets INVALID_ARGUMENT, a gRPC message over it is cut off within gRPC's memory
quota, a client that never reads its replies gets OVERLOADED once `max_outstanding_per_connection`
of its requests are running or unread, and every request it sent has exactly one reply when it
reads. The node's memory is read from /proc/<pid>/status (VmRSS, and VmHWM reset before each
probe). A reply to an envelope that is not valid protobuf (a non-UTF-8 id) carries an empty id."""

import os

import numpy as np
import pytest
import zmq
from onnx import TensorProto, helper, numpy_helper
from zmq.utils.monitor import recv_monitor_message

from conftest import Server, _save, make_mlp, metric_value, wait_until, write
from troupe_client import troupe_pb2 as pb

MiB = 1 << 20
LIMIT = 32 * MiB           # the abuse node's max_message_bytes
OUTSTANDING = 8            # its max_outstanding_per_connection (set with the CLI flag)
WIDE = 1 << 20             # floats per row of "wide"'s output: 4 MiB per reply


def memory_kib(pid, reset_peak=False):
    """(VmRSS, VmHWM) of a process in KiB; reset_peak first starts VmHWM over from VmRSS (so that
    a peak left by an earlier test does not hide this one's)."""
    if reset_peak:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out["VmRSS"], out["VmHWM"]


@pytest.fixture(scope="module")
def abuse_node(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("abuse"))
    models = os.path.join(root, "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=1)
    # "wide": a (1, 16) input, a 4 MiB output (the input tiled 65536 times).
    g = helper.make_graph([helper.make_node("Tile", ["x", "repeats"], ["y"])], "wide",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDE])],
                          [numpy_helper.from_array(np.array([1, WIDE // 16], np.int64), "repeats")])
    _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]),
          os.path.join(models, "wide", "1", "model.onnx"))
    write(os.path.join(models, "wide", "config.yaml"), "max_batch_size: 1\n")
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml, f"cpu_workers: 1\ngpus: none\ncompute_threads: 1\nwarmup_runs: 1\n"
                     f"max_message_bytes: {LIMIT}\nlog_level: info\n")
    s = Server(models, node_yaml, os.path.join(root, "serve.log"),
               extra_args=("--max-outstanding-per-connection", str(OUTSTANDING)))
    assert s.ready, s.reason
    yield s
    assert s.terminate() == 0


def dealer(endpoint, monitor_events=None, **options):
    """A DEALER connected to `endpoint`; with `monitor_events`, (the socket, its monitor), the
    monitor attached before the connection starts so that no event of it is missed."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for k, v in options.items():
        sock.setsockopt(getattr(zmq, k), v)
    monitor = sock.get_monitor_socket(monitor_events) if monitor_events is not None else None
    sock.connect(endpoint)
    return (sock, monitor) if monitor is not None else sock


def wait_event(monitor, wanted, timeout_ms=60000):
    """Waits for a socket monitor event of type `wanted`; returns False on timeout."""
    while monitor.poll(timeout_ms):
        if recv_monitor_message(monitor)["event"] == wanted:
            return True
    return False


def envelope(model="mlp", rid="big", shape=(1, 16), inputs=1):
    m = pb.ClientMessage()
    m.infer.model, m.infer.id = model, rid
    for i in range(inputs):
        d = m.infer.inputs.add(name="x", dtype=pb.FLOAT)
        d.shape.extend(shape)
    return m.SerializeToString()


def health_reply(sock, rid):
    m = pb.ClientMessage(id=rid)
    m.health.SetInParent()
    sock.send(m.SerializeToString())
    assert sock.poll(30000), "no reply to a health request"
    reply = pb.ServerMessage.FromString(sock.recv_multipart()[0])
    assert reply.id == rid and reply.health.live
    return reply


# ---- message size ------------------------------------------------------------------------------


def test_frames_over_the_limit_are_refused_before_they_are_buffered(abuse_node):
    """Four 120 MB frames against a 32 MiB limit (each under the old cap of four times the limit):
    ZeroMQ refuses the first frame from its size header and drops the connection; the node holds
    none of the 480 MB."""
    pid = abuse_node.proc.pid
    rss0, hwm0 = memory_kib(pid, reset_peak=True)
    sock, monitor = dealer(abuse_node.endpoint, zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    try:
        assert wait_event(monitor, zmq.EVENT_HANDSHAKE_SUCCEEDED)
        frame = np.zeros(120_000_000, np.uint8)
        sock.send_multipart([envelope()] + [frame] * 4, copy=False)
        assert wait_event(monitor, zmq.EVENT_DISCONNECTED), "the node kept the connection"
        rss1, hwm1 = memory_kib(pid)
        print(f"4 x 120 MB frames: VmRSS {rss0 // 1024} -> {rss1 // 1024} MiB, VmHWM {hwm0 // 1024} -> "
              f"{hwm1 // 1024} MiB")
        assert hwm1 - hwm0 < 100 * 1024, "the node buffered the frames"
        # The socket reconnects (the rest of the message was dropped on the client's side) and serves.
        assert wait_event(monitor, zmq.EVENT_HANDSHAKE_SUCCEEDED)
        health_reply(sock, "after")
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)


def test_a_message_over_the_limit_in_smaller_frames_gets_invalid_argument(abuse_node):
    """Frames under the limit that add up past it: a typed INVALID_ARGUMENT that echoes the id;
    the node does not keep them (sent five times, its peak grows by less than one message)."""
    pid = abuse_node.proc.pid
    rss0, hwm0 = memory_kib(pid, reset_peak=True)
    frame = np.zeros(30_000_000, np.uint8)
    sock = dealer(abuse_node.endpoint)
    try:
        for k in range(5):
            sock.send_multipart([envelope(rid=f"big{k}")] + [frame] * 4, copy=False)
            assert sock.poll(60000), "no reply: a message over the limit gets INVALID_ARGUMENT"
            parts = sock.recv_multipart()
            reply = pb.ServerMessage.FromString(parts[0])
            assert len(parts) == 1 and reply.HasField("error")
            assert pb.ErrorCode.Name(reply.error.code) == "INVALID_ARGUMENT"
            assert "max_message_bytes" in reply.error.message and str(LIMIT) in reply.error.message
            assert reply.id == f"big{k}"
        rss1, hwm1 = memory_kib(pid)
        print(f"5 x 120 MB in 30 MB frames: VmRSS {rss0 // 1024} -> {rss1 // 1024} MiB, VmHWM {hwm0 // 1024} -> "
              f"{hwm1 // 1024} MiB")
        assert rss1 - rss0 < 150 * 1024 and hwm1 - hwm0 < 300 * 1024
        health_reply(sock, "after")
    finally:
        sock.close(0)


def test_a_grpc_message_over_the_limit_is_reset_within_the_memory_quota(abuse_node):
    """gRPC checks max_message_bytes only once a whole message has arrived; its resource quota
    (4 x 32 MiB here) resets the stream first: RESOURCE_EXHAUSTED, and the node buffers far less
    than the 256 MB sent."""
    grpc = pytest.importorskip("grpc")
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    if not abuse_node.grpc_url:
        pytest.skip("troupe was built without gRPC")
    pid = abuse_node.proc.pid
    rss0, hwm0 = memory_kib(pid, reset_peak=True)
    n = 256_000_000
    req = service_pb2.ModelInferRequest(model_name="mlp")
    req.inputs.add(name="x", datatype="FP32").shape.extend([n // 64, 16])
    length, size = b"", n  # raw_input_contents (field 7) appended by hand: no second copy of it
    while True:
        length += bytes([(size & 0x7F) | (0x80 if size > 0x7F else 0)])
        size >>= 7
        if not size:
            break
    body = req.SerializeToString() + b"\x3a" + length + bytes(n)
    with grpc.insecure_channel(abuse_node.grpc_url, options=[("grpc.max_send_message_length", -1)]) as ch:
        call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as e:
            call(body, timeout=120)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    rss1, hwm1 = memory_kib(pid)
    print(f"256 MB gRPC message: VmRSS {rss0 // 1024} -> {rss1 // 1024} MiB, VmHWM {hwm0 // 1024} -> "
          f"{hwm1 // 1024} MiB; {e.value.details()}")
    assert hwm1 - hwm0 < 200 * 1024


# ---- a client that never reads -----------------------------------------------------------------


def answered(node):
    text = node.metrics()
    return (metric_value(text, "troupe_requests_total", model="wide", version="1", outcome="ok") +
            metric_value(text, "troupe_unrouted_requests_total", outcome="overloaded"))


def test_a_client_that_never_reads_gets_overloaded_and_every_request_one_reply(abuse_node):
    """200 requests for 4 MiB replies (800 MB) from a client that does not read: the node runs
    about max_outstanding_per_connection of them, answers the rest OVERLOADED, and its memory
    stays far below 800 MB. Read afterwards: exactly one reply per request."""
    pid = abuse_node.proc.pid
    sent = 200
    x = np.ones((1, 16), np.float32).tobytes()
    # Warm the path first (the first 4 MiB replies size the worker's pools).
    with dealer(abuse_node.endpoint) as warm:
        for k in range(4):
            warm.send_multipart([envelope(model="wide", rid=f"w{k}"), x])
        for k in range(4):
            assert warm.poll(30000)
            assert pb.ServerMessage.FromString(warm.recv_multipart()[0]).HasField("infer")
    rss0, _ = memory_kib(pid, reset_peak=True)
    before = answered(abuse_node)
    # A small receive window: ZeroMQ on the client side takes one message, the kernel a little.
    sock = dealer(abuse_node.endpoint, RCVHWM=1, RCVBUF=64 << 10)
    try:
        for k in range(sent):
            sock.send_multipart([envelope(model="wide", rid=str(k)), x])
        assert wait_until(lambda: answered(abuse_node) - before >= sent, timeout=120), \
            f"the node answered {answered(abuse_node) - before} of {sent}"
        rss1, hwm1 = memory_kib(pid)
        print(f"{sent} unread 4 MiB replies: VmRSS {rss0 // 1024} -> {rss1 // 1024} MiB, peak {hwm1 // 1024} MiB")
        assert hwm1 - rss0 < 200 * 1024, "the node holds the unread replies"

        codes = {}
        for _ in range(sent):
            assert sock.poll(30000), f"{len(codes)} replies of {sent}"
            parts = sock.recv_multipart()
            reply = pb.ServerMessage.FromString(parts[0])
            assert reply.id not in codes, f"two replies for {reply.id}"
            if reply.HasField("infer"):
                assert len(parts) == 2 and len(parts[1]) == 4 * WIDE
                codes[reply.id] = "OK"
            else:
                codes[reply.id] = pb.ErrorCode.Name(reply.error.code)
                assert codes[reply.id] == "OVERLOADED", reply.error.message
                assert "max_outstanding_per_connection" in reply.error.message
        assert sorted(codes, key=int) == [str(k) for k in range(sent)]
        assert not sock.poll(200), "a reply beyond one per request"
        ok = list(codes.values()).count("OK")
        print(f"{ok} ran, {sent - ok} OVERLOADED")
        assert OUTSTANDING <= ok < sent // 2
        # Read up, the connection is served again.
        sock.send_multipart([envelope(model="wide", rid="again"), x])
        assert sock.poll(30000)
        assert pb.ServerMessage.FromString(sock.recv_multipart()[0]).HasField("infer")
    finally:
        sock.close(0)


# ---- undecodable envelopes ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["infer.id", "id"])
def test_a_non_utf8_id_gets_a_parseable_reply_with_an_empty_id(server, where):
    m = pb.ClientMessage()
    m.infer.model = "mlp"
    m.infer.inputs.add(name="x", dtype=pb.FLOAT).shape.extend([1, 16])
    if where == "id":
        m.id = "IDIDID"
    else:
        m.infer.id = "IDIDID"
    raw = m.SerializeToString().replace(b"IDIDID", b"\xff\xfe\xfd\xfc\xfb\xfa")
    sock = dealer(server.endpoint)
    try:
        sock.send_multipart([raw, np.zeros((1, 16), np.float32).tobytes()])
        assert sock.poll(10000), "no reply: the node must answer every message"
        parts = sock.recv_multipart()
        reply = pb.ServerMessage.FromString(parts[0])  # raises if the reply is not valid protobuf
        assert reply.id == "" and reply.HasField("error")
        assert pb.ErrorCode.Name(reply.error.code) == "INVALID_ARGUMENT"
        health_reply(sock, "after")
    finally:
        sock.close(0)
