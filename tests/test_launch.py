"""Beyond one GPU: the trainers under ``accelerate launch``.

The DDP config the README gives for several GPUs starts, on this CPU-only machine, two CPU
processes that average their gradients over gloo; the DeepSpeed ZeRO-3 config is read with
accelerate's own loader (DeepSpeed and GPUs are not here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cai_utils

CONFIGS = Path(cai_utils.__file__).parent / "launch_configs"


def test_launch_configs_load_with_accelerates_loader():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    ddp = load_config_from_file(str(CONFIGS / "ddp.yaml"))
    assert ddp.distributed_type == DistributedType.MULTI_GPU and ddp.num_processes >= 2
    assert ddp.mixed_precision == "no"  # precision is the profile's, not the launcher's
    zero3 = load_config_from_file(str(CONFIGS / "zero3.yaml"))
    assert zero3.distributed_type == DistributedType.DEEPSPEED
    assert zero3.deepspeed_config["zero_stage"] == 3
    assert zero3.deepspeed_config["zero3_save_16bit_model"] is True


def _launch(args, tmp_path):
    env = {**os.environ, "CAI_PROFILE": "ci", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
           "OMP_NUM_THREADS": "1", "CAI_RUNS": str(tmp_path / "runs")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(CONFIGS / "ddp.yaml"), "--num_processes", "2", "--main_process_port", "29517",
           "-m", "cai_utils", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.e2e
def test_sft_trains_in_two_cpu_processes_over_gloo(tmp_path, root):
    data = tmp_path / "sft.jsonl"
    lines = (root / "data" / "sft" / "harmless-general.course-critic.jsonl").read_text().splitlines()
    data.write_text("\n".join(lines[:8]) + "\n")
    out = tmp_path / "sft"
    done = _launch(["train", "sft", "--data", str(data), "--out", str(out), "--max-steps", "2"],
                   tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((out / "train_config.json").read_text())
    assert config["launch"] == {"processes": 2, "distributed": "MULTI_CPU", "backend": "gloo"}
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter.manifest.json").exists()
    assert not list(tmp_path.glob("*.lock")), "rank 0 releases the output's lock"
    assert done.stdout.count("sft: 2 steps") == 2  # both processes trained the same 2 steps


def test_checkpoint_selection_is_refused_under_a_launch(tmp_path, monkeypatch):
    from cai_utils.data import DataError
    from cai_utils.profiles import get_profile
    from cai_utils.training import train_dpo

    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    profile = get_profile("ci").replace(dpo={"select_every": 2})
    with pytest.raises(DataError, match="runs in one process"):
        train_dpo(tmp_path / "pairs.jsonl", tmp_path / "dpo", profile=profile)
