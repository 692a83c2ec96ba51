"""Each config fact once: a field's default, help and bounds stand on the field, and the ``--help`` of
``denoisrec train`` and the torch-free check read them from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any, Iterator, Tuple

import pytest

from denoisrec.trainer.commands import train as train_command
from denoisrec.trainer.commands.suggest import HelpFormatter
from denoisrec.trainer.config.check import check_config
from denoisrec.trainer.config.options import UsageError
from denoisrec.trainer.config.tree import Config


def fields() -> Iterator[Tuple[str, dataclasses.Field]]:
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory()):  # type: ignore[misc]
            yield f"{section.name}.{f.name}", f


def value_of(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    train_command.add_arguments(p)
    return p


def test_every_train_flag_shows_the_default_of_its_field() -> None:
    """The help of each flag that sets a config field names the field and its default as ``Config()`` holds it
    (a default edited on one side only fails here), and the flag's value reaches that field.
    """
    p = train_parser()
    by_flag = {s: a for a in p._actions for s in a.option_strings}
    meta = dict(fields())
    assert set(train_command.FLAGS) <= set(by_flag)
    for flag, (key, _, _) in train_command.FLAGS.items():
        text = HelpFormatter("denoisrec train")._get_help_string(by_flag[flag]) or ""
        m = re.search(r"\((?P<key>[a-z_.]+); default: (?P<default>[^)]*)\)$", text)
        assert m is not None and m.group("key") == key, (flag, text)
        assert text.count("default: ") == 1, (flag, text)  # no second, hand-written default beside it
        default = value_of(Config(), key)
        shown = meta[key].metadata["unset"] if default is None else str(default)
        assert m.group("default") == shown, (flag, text)
        value = "7" if by_flag[flag].type is int else "x"
        cfg = train_command.config_from_args(p.parse_args([flag, value]))
        assert str(value_of(cfg, key)) == value, flag


def test_every_field_has_help_and_the_help_text_names_no_default() -> None:
    for key, f in fields():
        assert f.metadata.get("help"), f"{key}: give its setting(...) a help line"
        assert "default" not in f.metadata["help"], f"{key}: the default stands on the field, not in its help"


def _probes(meta: Any, kind: type) -> Iterator[Tuple[Any, bool]]:
    """(value, accepted?) just inside and just outside each bound."""
    step = 1 if kind is int else 1e-6
    for bound, is_open, sign in ((meta["lo"], meta["lo_open"], -1), (meta["hi"], meta["hi_open"], 1)):
        if bound is None:
            continue
        inside = bound - sign * step if is_open else bound
        outside = bound if is_open else bound + sign * step
        yield kind(inside), True
        yield kind(outside), False


def test_every_bounded_field_is_checked_at_its_edges() -> None:
    import typing

    bounded = [(k, f) for k, f in fields() if f.metadata.get("lo") is not None or f.metadata.get("hi") is not None]
    assert len(bounded) >= 20
    for key, f in bounded:
        section, name = key.split(".")
        hint = typing.get_type_hints(type(getattr(Config(), section)))[name]
        kind = int if hint in (int, typing.Optional[int]) else float
        for value, ok in _probes(f.metadata, kind):
            cfg = Config()
            setattr(getattr(cfg, section), name, value)
            if ok:
                check_config(cfg)
            else:
                with pytest.raises(UsageError, match=re.escape(f"{key}=")):
                    check_config(cfg)


def test_every_choice_field_refuses_what_it_does_not_list() -> None:
    for key, f in fields():
        choices = f.metadata.get("choices")
        if not choices:
            continue
        section, name = key.split(".")
        for value in choices:
            cfg = Config()
            setattr(getattr(cfg, section), name, value)
            if key != "run.device" or value != "cuda":  # cuda: refused without a GPU
                check_config(cfg)
        cfg = Config()
        setattr(getattr(cfg, section), name, "nonesuch")
        with pytest.raises(UsageError, match=re.escape(f"{key}='nonesuch'")):
            check_config(cfg)
