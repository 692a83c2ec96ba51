"""The torchx components as AppDefs (no jobs started): the torchrun command line they build, what the
Slurm and local schedulers make of it, the pre-submit option check, the repository's .torchxconfig, and
``denoisrec launch``.
"""

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from denoisrec.launch import components
from denoisrec.launch.components import PreSubmitError, bench, gen_data, parse_j, train
from denoisrec.trainer.commands import launch
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
        with pytest.raises(PreSubmitError, match="-j"):  # a ValueError that torchx prints in one line
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
        precheck=False,  # a and b are no trainer keys: the command line is what is tested here
    )
    role = app.roles[0]
    assert role.num_replicas == role.min_replicas == 1 and role.max_retries == 0
    cmd = _cmd(app)
    # denoisrec torchrun: torchrun's own options, one line per failed rank instead of its traceback
    assert cmd[:4] == ["/venv/bin/python", "-m", "denoisrec.trainer.cli", "torchrun"]
    assert _opt(cmd, "--rdzv_endpoint") == "localhost:0"  # one agent: a free port
    assert _opt(cmd, "--nnodes") == "1" and _opt(cmd, "--nproc_per_node") == "3"
    assert _opt(cmd, "--max_restarts") == "2" and _opt(cmd, "--rdzv_id") == "${app_id}"
    # the trainer's arguments, passed through untouched, after torchrun's own options
    assert cmd[cmd.index("--") :] == ["--", "--data", "data/tiny", "--set", "a=1", "b=2"]
    assert _opt(cmd, "--tee") == "3" and _opt(cmd, "--role") == "" and _opt(cmd, "--rdzv_backend") == "c10d"
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
        precheck=False,
    )
    role = app.roles[0]
    assert (role.min_replicas, role.num_replicas) == (2, 4) and role.max_retries == 3
    assert (role.resource.gpu, role.resource.cpu, role.resource.memMB) == (8, 64, 400_000)
    assert role.image == "reg/denoisrec:1" and role.port_map == {"c10d": 29611}
    assert role.mounts[0].src == "pvc" and role.mounts[0].dst_path == "/mnt/shared"
    assert role.env["TORCH_DISTRIBUTED_DEBUG"] == "DETAIL" and role.env["NCCL_DEBUG"] == "WARN"  # user wins
    assert "--rdzv_endpoint $${${rank0_env}:=localhost}:29611 " in role.args[1]  # expanded by the shell
    assert "--nnodes 2:4 --nproc_per_node 8 " in role.args[1]
    static = train(j="2x1", rdzv_backend="static", rdzv_endpoint="head:1234", precheck=False)
    cmd = _cmd(static)
    assert _opt(cmd, "--node_rank") == "${replica_id}" and _opt(cmd, "--rdzv_endpoint") == "head:1234"
    with pytest.raises(ValueError, match="max_restarts"):
        train(max_restarts=-1)


def test_bench_and_gen_data_commands() -> None:
    cmd = _cmd(bench("throughput", "--quick", j="1x2"))
    assert cmd[2:4] == ["denoisrec.trainer.cli", "torchrun"]
    assert cmd[cmd.index("--") :] == ["--", "bench", "throughput", "--quick"]
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
    assert f"{sys.executable} -m denoisrec.trainer.cli torchrun" in out
    assert " -- --data /d --set run.seed=1 run.epochs=2" in out


def test_the_torchrun_options_the_components_pass_are_torchruns() -> None:
    """Every option the component gives ``denoisrec torchrun`` is one torchrun's own parser takes, and the ranks
    run the trainer (``bench``: ``denoisrec bench``) with the arguments after ``--``.
    """
    from torch.distributed.run import get_args_parser

    from denoisrec.trainer.commands.torchrun import worker_argv

    for app in (
        train("--data", "d", j="2:4x8", rdzv_conf="join_timeout=900", max_restarts=3, precheck=False),
        train(j="2x1", rdzv_backend="static", rdzv_endpoint="head:1234", precheck=False),
        bench("throughput", "--quick", j="1x2"),
    ):
        cmd = [a.replace("${replica_id}", "0") for a in _cmd(app)]  # the scheduler fills in the node rank
        cut = cmd.index("--")
        args = get_args_parser().parse_args([*cmd[4:cut], "-m", *worker_argv(cmd[cut + 1 :])])
        assert args.nproc_per_node in ("8", "1", "2") and args.rdzv_id == "${app_id}" and args.role == ""
        assert args.module and args.training_script in ("denoisrec.trainer", "denoisrec.trainer.cli")
    assert (args.training_script, args.training_script_args) == (
        "denoisrec.trainer.cli",
        ["bench", "throughput", "--quick"],
    )


def test_train_checks_the_trainer_options_before_submitting(tmp_path: Path, monkeypatch) -> None:
    """The component refuses what every rank would refuse, in the check's own one line, before the AppDef
    exists; ``precheck=False`` skips the check; good options pass.
    """
    monkeypatch.delenv(components.PRECHECKED_ENV, raising=False)
    with pytest.raises(PreSubmitError) as e:
        train("--data", "data/tiny", "--denoiser", "tce", "-p", "beta=1", j="1x2")
    assert (
        str(e.value) == "denoisrec train: error: -p beta=1: tce has no option 'beta'; its options: eps_max, num_gradual"
    )
    with pytest.raises(PreSubmitError, match=r"global_batch_size=7: not divisible by the world size 3"):
        train("--set", "data.global_batch_size=7", j="1x3")  # the world size comes from -j
    with pytest.raises(PreSubmitError, match=r"--modle.*did you mean --model"):
        train("--modle", "dlrm", j="1x2")
    assert train("--denoiser", "tce", "-p", "beta=1", j="1x2", precheck=False).roles[0].num_replicas == 1
    t0 = time.perf_counter()
    app = train("--data", str(tmp_path / "not-here"), "--denoiser", "tce", "-p", "eps_max=0.2", j="2:4x2")
    assert app.roles[0].num_replicas == 4 and time.perf_counter() - t0 < 30  # data not visible here: no refusal
    # denoisrec launch says which options it checked: the component does not check those again
    monkeypatch.setenv(components.PRECHECKED_ENV, "--denoiser tce -p beta=1")
    assert train("--denoiser", "tce", "-p", "beta=1").roles[0].name == "trainer"
    with pytest.raises(PreSubmitError):
        train("--denoiser", "tce", "-p", "beta=2")
    assert launch.PRECHECKED_ENV == components.PRECHECKED_ENV


def test_a_component_mistake_is_one_torchx_line_before_submitting(tmp_path: Path) -> None:
    """Through ``torchx run``: a bad trainer option or ``-j`` is torchx's one error line, no traceback, no job."""
    for args in (["-j", "1x2", "--", "--denoiser", "tce", "-p", "beta=1"], ["-j", "0x2", "--", "--epochs", "1"]):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torchx.cli.main",
                "run",
                "-s",
                "local_cwd",
                "--dryrun",
                f"{COMPONENTS_FILE}:train",
                *args,
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert ("tce has no option 'beta'" if "tce" in args else "-j '0x2': need 1 <= MIN") in proc.stderr
        assert "=== APPLICATION ===" not in proc.stdout


def test_denoisrec_launch_check_only(tmp_path: Path) -> None:
    def check(*argv: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "denoisrec.trainer.cli", "launch", "--check-only", *argv]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    ok = check("-j", "1x2", "--", "--denoiser", "tce", "-p", "eps_max=0.2")
    assert ok.returncode == 0 and ok.stdout == ok.stderr == "", ok.stderr
    bad = check("-j", "2x2", "--", "--set", "data.global_batch_size=6")
    assert bad.returncode == 2 and bad.stdout == "", bad.stderr
    line = "data.global_batch_size=6: not divisible by the world size 4; use a multiple of 4 (e.g. 4)"
    assert bad.stderr.splitlines() == [f"denoisrec train: error: {line}"]
