"""The command line's conventions, as a user meets them (subprocesses of ``denoisrec``): no abbreviated flags,
"did you mean" for a mistyped flag or choice (one line, exit 2), and help written for users: no reST markup,
every option with help and its default, every preset described.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from typing import Iterator, List, Tuple

import pytest

from denoisrec.trainer.cli import HelpFormatter, build_parser
from denoisrec.trainer.commands import gen_data, launch

# (arguments after `denoisrec`, words the one error line must contain)
MISTAKES = [
    (["train", "--epoch", "1", "--print-config"], ["unrecognized arguments: --epoch 1", "did you mean --epochs?"]),
    (["train", "--modle", "fm", "--print-config"], ["--modle fm", "did you mean --model?"]),
    (["train", "--denoiser", "obsrvation", "--print-config"], ["unknown denoiser", "did you mean 'observation'"]),
    (["train", "--set", "optim.decay=cosin", "--print-config"], ["optim.decay='cosin'", "did you mean 'cosine'?"]),
    (
        ["train", "--denoiser", "observation", "-p", "form=examinaton", "--print-config"],
        ["-p form=examinaton", "did you mean 'examination'?"],
    ),
    (["trian"], ["invalid choice: 'trian'", "did you mean 'train'?"]),
    (["bench", "throughput", "--qiuck"], ["denoisrec bench throughput: error:", "did you mean --quick?"]),
    (["gen-data", "--out", "x", "--logging", "rnaker"], ["invalid choice: 'rnaker'", "did you mean 'ranker'?"]),
    (["gen-data", "--out", "x", "--pre", "tiny"], ["unrecognized arguments: --pre tiny"]),
]


def denoisrec(args: List[str], cwd: str = ".") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "denoisrec.trainer.cli", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


@pytest.mark.parametrize("args,words", MISTAKES, ids=[" ".join(m[0]) for m in MISTAKES])
def test_a_mistyped_flag_or_choice_is_one_line_with_a_suggestion(args: List[str], words: List[str], tmp_path) -> None:
    proc = denoisrec(args, cwd=str(tmp_path))
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and proc.stdout == "", proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_no_parser_takes_abbreviations() -> None:
    for path, p in parsers():
        assert p.allow_abbrev is False, path


REST = re.compile(r"``|:(?:class|func|mod|data|meth|attr|exc):`|Example::|>>>")


def parsers() -> Iterator[Tuple[str, argparse.ArgumentParser]]:
    """Every command and sub-command's parser (launch's own too)."""

    def walk(p: argparse.ArgumentParser, path: str) -> Iterator[Tuple[str, argparse.ArgumentParser]]:
        yield path, p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    yield from walk(sp, f"{path} {name}")

    yield from walk(build_parser(), "denoisrec")
    yield "denoisrec launch", launch._parser()


def test_every_help_is_plain_text_and_every_option_has_help() -> None:
    for path, p in parsers():
        text = p.format_help()
        assert not REST.search(text), (path, REST.findall(text))
        for a in p._actions:
            if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction)):
                assert a.help, f"{path} {a.option_strings or a.dest}: no help"


@pytest.mark.parametrize("command", ["bench", "launch", "export", "predict", "gen-data"])
def test_every_option_of_the_user_commands_shows_its_default(command: str) -> None:
    for path, p in parsers():
        if path.split()[1:2] != [command]:
            continue
        fmt = HelpFormatter(path)
        for a in p._actions:
            if a.option_strings and a.nargs != 0 and not a.required and not isinstance(a, argparse._HelpAction):
                assert "default" in fmt._get_help_string(a), f"{path} {a.option_strings}: no default shown"


def test_helps_as_printed() -> None:
    bench = denoisrec(["bench", "--help"]).stdout
    assert "denoisrec bench throughput --quick" in bench and "docs/benchmarks.md" in bench
    serving = denoisrec(["bench", "serving", "--help"]).stdout
    assert "--rounds ROUNDS" in serving and "(default: 3)" in serving and "``" not in serving
    out = denoisrec(["launch", "--help"])
    assert out.returncode == 0 and "denoisrec launch -j 1x2 -- --data" in out.stdout
    assert "torchx_argv" not in out.stdout and "``" not in out.stdout


def test_every_gen_data_preset_is_described() -> None:
    from denoisrec.trainer.datasets.synthetic import PRESETS

    assert set(gen_data.PRESETS) == set(PRESETS)
    text = denoisrec(["gen-data", "--help"]).stdout
    for name in PRESETS:
        assert re.search(rf"^  {name} +\S", text, re.M), name
    assert "criteo" in text
