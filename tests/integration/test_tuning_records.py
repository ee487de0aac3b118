"""The node's tuning records file (node.yaml `tuning_records_file`, `--tuning-records-file`;
docs/serving.md): a file that cannot be used is one warning and the node still serves; a missing
one is nothing recorded yet. These nodes run on the CPU, which records no convolution choices, so
the file is never written here (tests/gpu/test_cuda_tuning_records.cpp covers the records)."""

import os

import numpy as np

from conftest import Server, make_mlp, write

NODE_YAML = "cpu_workers: 1\ngpus: none\ncompute_threads: 1\nwarmup_runs: 1\nlog_level: info\n"
GARBAGE = b"\x00\x01 not tuning records \xff\n" * 10


def repository(root, node_extra=""):
    models = os.path.join(root, "models")
    make_mlp(os.path.join(models, "mlp", "1", "model.onnx"), seed=41)
    node_yaml = os.path.join(root, "node.yaml")
    write(node_yaml, NODE_YAML + node_extra)
    return models, node_yaml


def serve_and_infer(models, node_yaml, log_path, extra_args=()):
    """Starts a node, checks it is ready and answers, stops it; returns its log records."""
    s = Server(models, node_yaml, log_path, extra_args=extra_args)
    c = s.client()
    try:
        assert s.ready, s.reason
        y = c.infer("mlp", {"x": np.ones((2, 16), np.float32)}, wait=30)["y"]
        assert y.shape == (2, 8)
        return s.log_records()
    finally:
        c.close()
        assert s.terminate() == 0, open(log_path).read()[-3000:]


def tuning_warnings(records):
    return [r for r in records if r.get("level") == "warning" and "tuning records" in r.get("msg", "")]


def test_a_garbage_tuning_records_file_is_one_warning_and_the_node_serves(tmp_path):
    records_file = tmp_path / "tuning.txt"
    records_file.write_bytes(GARBAGE)
    models, node_yaml = repository(str(tmp_path), f"tuning_records_file: {records_file}\n")
    records = serve_and_infer(models, node_yaml, str(tmp_path / "serve.log"))
    warnings = tuning_warnings(records)
    assert len(warnings) == 1, warnings
    assert str(records_file) in warnings[0]["msg"], warnings[0]
    # Nothing was recorded (CPU only): the file is left as it was.
    assert records_file.read_bytes() == GARBAGE


def test_a_file_of_other_libraries_is_a_warning_too(tmp_path):
    records_file = tmp_path / "tuning.txt"
    # Another cuDNN's records: refused whatever this build's versions are (no build has cuDNN 1).
    records_file.write_text("troupe-tuning-records 1 cudnn 1 cudart 1\nend 0 0\n")
    models, node_yaml = repository(str(tmp_path))
    records = serve_and_infer(models, node_yaml, str(tmp_path / "serve.log"),
                              extra_args=("--tuning-records-file", str(records_file)))
    warnings = tuning_warnings(records)
    assert len(warnings) == 1 and "cuDNN 1 " in warnings[0]["msg"], warnings


def test_a_directory_as_tuning_records_file_is_a_warning(tmp_path):
    models, node_yaml = repository(str(tmp_path), f"tuning_records_file: {tmp_path}\n")
    warnings = tuning_warnings(serve_and_infer(models, node_yaml, str(tmp_path / "serve.log")))
    assert len(warnings) == 1 and "not a regular file" in warnings[0]["msg"], warnings


def test_a_missing_tuning_records_file_is_nothing_recorded_yet(tmp_path):
    records_file = tmp_path / "state" / "tuning.txt"
    models, node_yaml = repository(str(tmp_path))
    records = serve_and_infer(models, node_yaml, str(tmp_path / "serve.log"),
                              extra_args=("--tuning-records-file", str(records_file)))
    assert tuning_warnings(records) == []
    assert any("tuning records: 0 recorded choices read from" in r.get("msg", "") for r in records)
    assert not records_file.exists(), "nothing recorded, nothing written"
