"""The torchx components as AppDefs (no jobs started): the torchrun command line they build, what the
Slurm and local schedulers make of it, the repository's .torchxconfig, and ``denoisrec launch``.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from denoisrec.launch.components import bench, gen_data, parse_j, train
from denoisrec.trainer.commands.launch import COMPONENTS_FILE, merge_list_options, torchx_argv

ROOT = Path(__file__).resolve().parents[2]


def _cmd(app) -> list:
    role = app.roles[0]
    assert role.entrypoint == "bash" and role.args[0] == "-c"
    return shlex.split(role.args[1])


def _opt(cmd: list, name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_parse_j() -> None:
    assert parse_j("1x2") == (1, 1, 2)
    assert parse_j("2x1") == (2, 2, 1)
    assert parse_j("3") == (1, 1, 3)
    assert parse_j("2:4x8") == (2, 4, 8)
    for bad in ("", "x2", "2x", "0x2", "2x0", "3:2x1", "2*2", "1x2x3"):
        with pytest.raises(ValueError, match="-j"):
            parse_j(bad)


def test_single_node_train_command() -> None:
    app = train(
        "--data",
        "data/tiny",
        "--set",
        "a=1",
        "b=2",
        j="1x3",
        python="/venv/bin/python",
        max_restarts=2,
        env={"FOO": "bar"},
    )
    role = app.roles[0]
    assert role.num_replicas == role.min_replicas == 1 and role.max_retries == 0
    cmd = _cmd(app)
    assert cmd[:3] == ["/venv/bin/python", "-m", "torch.distributed.run"]
    assert _opt(cmd, "--rdzv_endpoint") == "localhost:0"  # one agent: a free port
    assert _opt(cmd, "--nnodes") == "1" and _opt(cmd, "--nproc_per_node") == "3"
    assert _opt(cmd, "--max_restarts") == "2" and _opt(cmd, "--rdzv_id") == "${app_id}"
    # the trainer is named, with its arguments passed through untouched, after torchrun's own options
    assert cmd[cmd.index("-m", 3) :] == ["-m", "denoisrec.trainer", "--data", "data/tiny", "--set", "a=1", "b=2"]
    assert role.env["FOO"] == "bar" and role.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"


def test_multi_node_train_command_and_options() -> None:
    app = train(
        j="2:4x8",
        gpu=8,
        cpu=64,
        memMB=400_000,
        rdzv_port=29611,
        image="reg/denoisrec:1",
        mounts=["type=volume", "src=pvc", "dst=/mnt/shared"],
        debug=True,
        max_retries=3,
        env={"NCCL_DEBUG": "WARN"},
    )
    role = app.roles[0]
    assert (role.min_replicas, role.num_replicas) == (2, 4) and role.max_retries == 3
    assert (role.resource.gpu, role.resource.cpu, role.resource.memMB) == (8, 64, 400_000)
    assert role.image == "reg/denoisrec:1" and role.port_map == {"c10d": 29611}
    assert role.mounts[0].src == "pvc" and role.mounts[0].dst_path == "/mnt/shared"
    assert role.env["TORCH_DISTRIBUTED_DEBUG"] == "DETAIL" and role.env["NCCL_DEBUG"] == "WARN"  # user wins
    assert "--rdzv_endpoint $${${rank0_env}:=localhost}:29611 " in role.args[1]  # expanded by the shell
    assert "--nnodes 2:4 --nproc_per_node 8 " in role.args[1]
    static = train(j="2x1", rdzv_backend="static", rdzv_endpoint="head:1234")
    cmd = _cmd(static)
    assert _opt(cmd, "--node_rank") == "${replica_id}" and _opt(cmd, "--rdzv_endpoint") == "head:1234"
    with pytest.raises(ValueError, match="max_restarts"):
        train(max_restarts=-1)


def test_bench_and_gen_data_commands() -> None:
    cmd = _cmd(bench("throughput", "--quick", j="1x2"))
    assert cmd[cmd.index("-m", 3) :] == ["-m", "denoisrec.trainer.cli", "bench", "throughput", "--quick"]
    assert _opt(cmd, "--max_restarts") == "0"
    app = gen_data("--preset", "tiny", "--out", "/mnt/shared/data/tiny", python="py")
    assert app.roles[0].num_replicas == 1
    assert _cmd(app) == [
        "py",
        "-m",
        "denoisrec.trainer.cli",
        "gen-data",
        "--preset",
        "tiny",
        "--out",
        "/mnt/shared/data/tiny",
    ]


def test_what_slurm_and_local_cwd_make_of_a_two_node_job() -> None:
    from torchx.runner import get_runner

    app = train("--data", "/shared/data", j="2x8", gpu=8, python="/shared/venv/bin/python", max_retries=2)
    with get_runner() as runner:
        script = runner.dryrun(app, "slurm", cfg={"partition": "gpu", "time": "04:00:00"}).request.materialize()
        local = runner.dryrun(app, "local_cwd", cfg={}).request
    # one heterogeneous Slurm group per node, each asking for its 8 GPUs; node 0's host is the rendezvous
    assert script.count("#SBATCH --job-name=trainer-") == 2 and script.count("--gpus-per-task=8") == 2
    assert "--rdzv_endpoint ${SLURM_JOB_NODELIST_HET_GROUP_0:=localhost}:29500" in script
    assert '"$SLURM_JOB_ID"' in script and "--kill-on-bad-exit=1" in script
    assert "TORCHX_MAX_RETRIES=2" in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    replicas = local.role_params["trainer"]
    assert len(replicas) == 2
    for r in replicas:
        assert "--rdzv_endpoint ${TORCHX_RANK0_HOST:=localhost}:29500" in r.args[2]
        assert f"--rdzv_id '{local.app_id}' " in r.args[2]
        assert r.env["TORCHX_RANK0_HOST"] == "localhost"


def test_repository_torchxconfig() -> None:
    from torchx.runner.config import get_config, load_sections

    sections = load_sections(prefix="component", dirs=[str(ROOT)])
    for name in ("train", "bench", "gen_data"):
        assert sections[f"launch/components.py:{name}"] == {"python": ".venv/bin/python"}
    assert get_config(prefix="cli", name="run", key="scheduler", dirs=[str(ROOT)]) == "local_cwd"


def test_denoisrec_launch_command_line(tmp_path: Path) -> None:
    assert merge_list_options(["--set", "a=1", "--data", "d", "--set=b=2", "-p", "x=1", "--denoiser-param", "y=2"]) == [
        "--data",
        "d",
        "--set",
        "a=1",
        "b=2",
        "-p",
        "x=1",
        "y=2",
    ]
    argv = torchx_argv(
        ["-s", "slurm", "-cfg", "partition=gpu", "-j", "2x8", "--gpu", "8", "--", "--set", "a=1"],
        python="/local/python",
    )
    assert argv == [
        "run",
        "-s",
        "slurm",
        "-cfg",
        "partition=gpu",
        f"{COMPONENTS_FILE}:train",
        "-j",
        "2x8",
        "--gpu",
        "8",
        "--",
        "--set",
        "a=1",
    ]  # a remote scheduler keeps the component's python
    # a local job's logs go beside the run's outputs, unless -cfg names a log_dir
    assert torchx_argv(["-j", "1x2", "--", "--out", "r/x"])[:5] == [
        "run",
        "-s",
        "local_cwd",
        "-cfg",
        "log_dir=r/x/logs",
    ]
    assert torchx_argv(["-cfg", "log_dir=/l", "--", "--out=r/x"])[3:5] == ["-cfg", "log_dir=/l"]
    # From another directory (no .torchxconfig there): the installed components, this interpreter.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "denoisrec.trainer.cli",
            "launch",
            "--dryrun",
            "-j",
            "2x1",
            "--",
            "--data",
            "/d",
            "--set",
            "run.seed=1",
            "--set",
            "run.epochs=2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = re.sub(r"['\"]\s*\n\s*['\"]", "", proc.stdout)  # pformat splits long strings over lines
    assert f"{sys.executable} -m torch.distributed.run" in out
    assert "-m denoisrec.trainer --data /d --set run.seed=1 run.epochs=2" in out
