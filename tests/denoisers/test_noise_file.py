"""A given noise model (``observation.noise_file``): the file's checks, the fixed likelihood against a
hand-computed case, no gradient to the tower, and the generator's truth written in that format.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from denoisrec.denoisers.noise_file import NoiseModel
from denoisrec.denoisers.observation import ObservationModel
from denoisrec.trainer.datasets.synthetic import (
    NOISE_MODEL_FILE,
    PRESETS,
    World,
    attention_logits,
    generate,
    logging_params,
    noise_model,
    scaled,
)

TABLES = {"position": 31, "scene": 6}
DOC = {"bias": 1.0, "q0": 0.55, "q1": 0.5, "attention": {"position": [0.0] + [-0.1 * k for k in range(30)]}}


def _write(tmp_path: Path, doc: object) -> str:
    p = tmp_path / "noise.json"
    p.write_text(json.dumps(doc))
    return str(p)


def _batch(pos: list, scene: list) -> KeyedJaggedTensor:
    n = len(pos)
    return KeyedJaggedTensor.from_lengths_sync(
        ["position", "scene"], torch.tensor(pos + scene), torch.ones(2 * n, dtype=torch.int32)
    )


def test_fixed_noise_gives_the_hand_computed_likelihood_and_trains_f_alone(tmp_path: Path) -> None:
    d = ObservationModel(TABLES, form="examination", noise_file=_write(tmp_path, DOC), device=torch.device("cpu"))
    kjt = _batch([1, 11], [0, 3])
    batch = type("B", (), {"sparse_features": kjt, "is_noisy": None})()
    z = torch.tensor([0.2, -0.5], requires_grad=True)
    y = torch.tensor([1.0, 0.0])
    out = d(z, y, torch.arange(2), batch)
    out.loss.backward()
    # a = 1 + A[pos]: position 1 → 1.0, position 11 → 1 − 1.0 = 0.0; e = σ(a); h = (1 − e)·0.55, h' = 1 − (1 − e)·0.5.
    nll = 0.0
    for zi, yi, a in ((0.2, 1, 1.0), (-0.5, 0, 0.0)):
        e, f = 1 / (1 + math.exp(-a)), 1 / (1 + math.exp(-zi))
        h, hp = (1 - e) * 0.55, 1 - (1 - e) * 0.5
        p1 = f * hp + (1 - f) * h
        nll -= math.log(p1 if yi else 1 - p1)
    assert float(out.value) == pytest.approx(nll / 2, rel=1e-6)
    assert z.grad is not None and bool((z.grad != 0).all())
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in d.tower.parameters())
    assert float(d.u.grad.abs().sum()) == 0.0
    assert d.hparams()["noise_file"].endswith("noise.json")


@pytest.mark.parametrize(
    "doc, match",
    [
        ({**DOC, "q0": 1.2}, "q0=1.2 must lie in"),
        ({k: v for k, v in DOC.items() if k != "q1"}, r"missing key\(s\) \['q1'\]"),
        ({**DOC, "attention": {"device": [0.0] * 4}}, "'device' is not a context feature"),
        ({**DOC, "attention": {"scene": [0.0] * 5}}, r"attention\['scene'\] has 5 logits; the schema's table has 6"),
        ({**DOC, "form": "mixture"}, "only form 'examination'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_noise_files_are_named(tmp_path: Path, doc: object, match: str) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(ValueError, match=match) as e:
        NoiseModel.read(path, TABLES)
    assert path in str(e.value)


def test_unreadable_noise_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="noise_file='.*nope.json': cannot read it"):
        NoiseModel.read(str(tmp_path / "nope.json"), TABLES)


def test_generator_writes_its_true_noise_model(tmp_path: Path) -> None:
    p = scaled(PRESETS["tiny"], 3000)
    stats = generate(str(tmp_path), p, seed=0)
    doc = json.loads((tmp_path / NOISE_MODEL_FILE).read_text())
    assert doc == json.loads(json.dumps(noise_model(stats["logging"]))) and doc["q0"] == p.q_fp
    # The file's additive logits equal the generator's own attention logits on random contexts.
    r = np.random.default_rng(0)
    n = 500
    pos, scene = r.integers(1, 31, n), r.integers(0, 6, n)
    device, hour = r.integers(0, 4, n), r.integers(0, 24, n)
    want = attention_logits(World(p, 0), pos, scene, device, hour)
    tables = {"position": 31, "scene": 6, "device": 4, "hour": 24}
    nm = NoiseModel.from_dict(doc, tables, "truth")
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["position", "scene", "device", "hour"],
        torch.from_numpy(np.concatenate([pos, scene, device, hour])),
        torch.ones(4 * n, dtype=torch.int32),
    )
    assert np.allclose(nm.attention_logit(kjt).numpy(), want, atol=1e-5)
    assert logging_params(p)["q_fn"] == doc["q1"]


@pytest.mark.parametrize("truth", [True, False])
def test_context_report_conditions_on_the_clean_label_when_the_batch_has_it(tmp_path: Path, truth: bool) -> None:
    # Clean negatives shown at position 1 (a = 1), clean positives at position 11 (a = 0), all in scene 2. The
    # generator's truth per scene averages h over its clean negatives and h' over its clean positives.
    d = ObservationModel(
        TABLES, form="examination", noise_file=_write(tmp_path, DOC), device=torch.device("cpu"), diag_decay=0.0
    )
    clean = torch.tensor([0.0, 0.0, 1.0, 1.0])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    batch = type("B", (), {"sparse_features": _batch([1, 1, 11, 11], [2, 2, 2, 2])})()
    batch.is_noisy = (labels != clean).float() if truth else None
    d(torch.zeros(4), labels, torch.arange(4), batch)
    rep = d.context_report()["scene"]
    e1, e0 = 1 / (1 + math.exp(-1.0)), 0.5
    h = [(1 - e1) * 0.55, (1 - e1) * 0.55, (1 - e0) * 0.55, (1 - e0) * 0.55]
    hp = [1 - (1 - e) * 0.5 for e in (e1, e1, e0, e0)]
    want_h, want_hp = (h[0], hp[2]) if truth else (sum(h) / 4, sum(hp) / 4)
    assert rep["values"] == [2] and rep["h"][0] == pytest.approx(want_h, rel=1e-6)
    assert rep["h_prime"][0] == pytest.approx(want_hp, rel=1e-6) and rep["weight"] == [pytest.approx(4.0)]
