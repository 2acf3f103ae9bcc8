"""The seeded/full-size runs behind the committed figures of notebooks 2.1-2.3 (small sizes)."""

import json

import pytest
import torch

from course_lib.data import ShapeWorldConfig, generate
from course_lib.multimodal.contrastive import clip_reference_diagnostics, lit_data
from course_lib.multimodal.studies import lit_seeds, main, matching_seeds, retrieval_figures, sinkhorn_runs


def test_lit_data_and_seeded_runs(tiny_clip):
    model, tok = tiny_clip
    train, test = lit_data(model, tok, 40, n_test=24)
    assert len(train) == 40 and len(test) == 24 and train.negative_ids.shape == train.token_ids.shape
    runs = lit_seeds(train, test, tok.vocab_size, steps=2, seeds=[0, 1], batch_size=16)
    assert set(runs) == {"infonce", "siglip"}
    for per in runs.values():
        assert all(len(v) == 2 for v in per.values())
        assert all(0.0 <= r <= 1.0 for r in per["t2i_R@1"])
    again = lit_seeds(train, test, tok.vocab_size, steps=2, seeds=[0], batch_size=16, kinds=("infonce",))
    assert again["infonce"]["alignment"][0] == pytest.approx(runs["infonce"]["alignment"][0])  # seeded
    json.dumps(runs, allow_nan=False)
    ref = clip_reference_diagnostics(model, tok, n_test=24)
    assert {"alignment", "uniformity_image", "modality_gap"} <= set(ref)
    with pytest.raises(ValueError):
        lit_seeds(train, test, tok.vocab_size, steps=2, seeds=[])
    with pytest.raises(ValueError):
        lit_data(model, tok, 1)


def test_matching_seeds_scores_both_scorers_on_the_same_negatives(tiny_clip):
    model, tok = tiny_clip
    cfg = ShapeWorldConfig(max_objects=3)
    out = matching_seeds(model, tok, generate(32, seed=1, config=cfg), generate(40, seed=2, config=cfg), steps=2,
                         seeds=[0, 1], batch_size=8)
    assert sum(out["counts"].values()) == 40 and set(out["dot"]) == set(out["kinds"]) | {"all"}
    assert all(len(v) == 2 for v in out["itm"].values()) and len(out["heads"]) == 2
    weighted = sum(out["dot"][k] * out["counts"][k] for k in out["kinds"]) / 40
    assert out["dot"]["all"] == pytest.approx(weighted)
    assert len(out["localisation"]) == 2 and out["localisation_chance"] == pytest.approx(1 / 16)
    assert out["nouns"] >= 40 and all(0.0 <= a <= 1.0 for a in out["localisation"])


def test_noun_localisation_finds_a_head_that_looks_at_the_right_patch(tiny_clip):
    from course_lib.multimodal.heads import MatchingHead, matching_features
    from course_lib.multimodal.studies import noun_localisation

    model, tok = tiny_clip
    batch = generate(12, seed=3, config=ShapeWorldConfig(max_objects=2))
    feats = matching_features(model, tok, batch)
    head = MatchingHead(feats.image.shape[-1], feats.positive.shape[-1], dim=64, heads=4, layers=1)
    acc, nouns, maps = noun_localisation(head, feats, batch)
    assert nouns == sum(len(batch.shape_names(i)) for i in range(len(batch))) and 0.0 <= acc <= 1.0
    assert maps.shape[-1] == 16

    class Oracle(torch.nn.Module):  # attends exactly the patch of each noun's object
        def forward(self, image, text, mask, return_attention=False):
            w = torch.zeros(len(batch), text.shape[1], 17)
            for i in range(len(batch)):
                words = ["<sot>"] + batch.captions[i].split()
                for obj, shape in enumerate(batch.shape_names(i)):
                    cx, cy = batch.centers[i, obj]
                    w[i, words.index(shape), 1 + int(cy // 8) * 4 + int(cx // 8)] = 1.0
            return torch.zeros(len(batch)), w[None]

    assert noun_localisation(Oracle(), feats, batch)[0] == 1.0


def test_retrieval_figures_and_sinkhorn_runs():
    figs = retrieval_figures([60])
    rows = {r["direction"]: r for r in figs["60"]["rows"]}
    assert set(rows) == {"text->image", "image->text", "image->image"}
    assert all(r["R@10"] >= r["chance_R@10"] for r in rows.values())
    assert figs["60"]["top1_misses"]["queries"] == 60
    s = sinkhorn_runs(runs=2, n=40, regs=(0.1,))
    (row,) = s["rows"]
    assert len(row["speedup"]) == 2 and row["max_abs_diff"] < 1e-6
    json.dumps(s, allow_nan=False)
    with pytest.raises(ValueError):
        sinkhorn_runs(runs=0)


def test_main_rejects_an_unknown_study(capsys):
    with pytest.raises(SystemExit):
        main(["nothing"])
