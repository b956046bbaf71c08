"""Two CPU processes under torchrun (gloo) match one process on the same data."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
QA_WORKER = os.path.join(os.path.dirname(__file__), "ddp_qa_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def run(args, out, worker=WORKER):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    proc = subprocess.run(args + [worker, str(out)] + (["2"] if "torch.distributed.run" in args else ["4"]),
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "result.json") as f:
        return load_file(str(out / "result.safetensors")), json.load(f)


def test_two_process_torchrun_matches_one_process(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    # one process, 4 streams  vs  two ranks with 2 streams each (videos sharded across ranks)
    single, single_log = run([sys.executable], tmp_path / "one")
    double, double_log = run(TORCHRUN, tmp_path / "two")
    assert double_log["world_size"] == 2
    assert sorted(single) == sorted(double) and any(k.startswith("grad.") for k in single)
    for key in single:  # DDP-averaged gradients (and so the weights) equal the one-process ones
        assert torch.allclose(single[key], double[key], atol=1e-6), key
    assert double_log["losses"] == pytest.approx(single_log["losses"], rel=1e-5)
    assert double_log["eval"] == pytest.approx(single_log["eval"])  # metrics reduced over ranks
    assert os.listdir(tmp_path / "two" / "run")  # rank 0 wrote the checkpoint


def test_two_process_qa_task_matches_one_process(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    # one process, batches of 4  vs  two ranks with 2 examples each (every other example of the epoch's order)
    single, single_log = run([sys.executable], tmp_path / "one", QA_WORKER)
    double, double_log = run(TORCHRUN, tmp_path / "two", QA_WORKER)
    assert double_log["world_size"] == 2 and len(double_log["losses"]) == len(single_log["losses"]) == 8
    for key in single:  # the core averaged the gradients over ranks
        assert torch.allclose(single[key], double[key], atol=1e-6), key
    assert double_log["losses"] == pytest.approx(single_log["losses"], rel=1e-5)  # losses reduced over ranks
