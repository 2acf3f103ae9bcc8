"""The seeded studies of notebooks 2.5-2.7 (course_lib.multimodal.fusion_studies) and the building
blocks they added to fusion, heads and advanced: reproducible by seed, computed guides."""

import numpy as np
import pytest
import torch

from course_lib.data import ShapeWorldConfig, ShapeWorldQADataset, generate
from course_lib.multimodal import advanced
from course_lib.multimodal.fusion import TrainSettings, compare_fusion, vqa_features
from course_lib.multimodal.fusion_studies import (
    advanced_guide,
    fusion_guide,
    fusion_sentences,
    main,
    markdown_table,
    relation_chance,
    seed_table,
    stack_seeds,
    tied_with_best,
    verdict,
)
from course_lib.multimodal.heads import accuracy_by_kind, dual_encoder_scores, matching_features, matching_scores, \
    train_itm_head
from course_lib.results import Results
from course_lib.conclusions import compare


def _results(name, figures, profile="quick", seeds=(0, 1, 2)):
    return Results(name=name, command="python -m x", profile=profile, seeds=list(seeds), hardware="cpu",
                   versions={}, created="2026-01-01", figures=figures)


def test_stack_seeds_nests_lists_and_rejects_mismatched_seeds():
    assert stack_seeds([{"a": {"x": 1, "y": 2.5}}, {"a": {"x": 3, "y": 0.5}}]) == {"a": {"x": [1.0, 3.0], "y": [2.5, 0.5]}}
    with pytest.raises(ValueError):
        stack_seeds([{"a": 1.0}, {"b": 1.0}])
    with pytest.raises(ValueError):
        stack_seeds([])


def test_tied_with_best_names_every_option_inside_the_spread():
    assert tied_with_best({"a": [0.9, 0.91, 0.92], "b": [0.5, 0.51, 0.52]}) == ["a"]
    assert tied_with_best({"a": [0.70, 0.74, 0.72], "b": [0.71, 0.73, 0.69], "c": [0.1, 0.11, 0.12]}) == ["a", "b"]
    assert tied_with_best({"slow": [3.0, 3.1, 2.9], "fast": [1.0, 1.1, 0.9]}, higher_is_better=False) == ["fast"]
    c = compare({"a": [0.70, 0.74, 0.72], "b": [0.71, 0.73, 0.69]})
    assert verdict(c).endswith("(not distinguishable)")
    with pytest.raises(ValueError):
        tied_with_best({"a": [1.0]})


def test_tables():
    text = markdown_table(("x", "y"), [(1, "a|b")])
    assert text.splitlines()[0] == "| x | y |" and "a\\|b" in text
    with pytest.raises(ValueError):
        markdown_table(("x", "y"), [(1,)])
    table = seed_table({"m": {"acc": [0.5, 0.7], "params": 1200}}, ("acc", "params", "missing"))
    assert "0.600 ± 0.141" in table and "1,200" in table and table.rstrip().endswith("-")


def _fusion_figures(relation_best, majority_relation=0.47):
    fam = {"early": {"color": [0.72, 0.71, 0.73], "shape": [0.62, 0.60, 0.64], "count": [0.94, 0.95, 0.93],
                     "relation": [0.50, 0.49, 0.51], "train_relation": [0.52, 0.53, 0.52], "params": 100},
           "middle": {"color": [0.69, 0.70, 0.68], "shape": [0.59, 0.61, 0.57], "count": [0.95, 0.95, 0.96],
                      "relation": relation_best, "train_relation": [0.53, 0.53, 0.52], "params": 200},
           "late": {"color": [0.62, 0.62, 0.63], "shape": [0.56, 0.55, 0.57], "count": [0.96, 0.95, 0.96],
                    "relation": [0.49, 0.48, 0.50], "train_relation": [0.53, 0.52, 0.53], "params": 210}}
    return {"budget": {"train_images": 4000, "test_images": 600, "steps": 800, "batch_size": 32, "layers": 1,
                       "dim": 64, "heads": 4},
            "majority": {"color": 0.17, "shape": 0.26, "count": 0.38, "relation": majority_relation},
            "train_majority": {"relation": 0.52}, "families": fam}


def test_fusion_guide_is_computed_from_the_figures():
    chance = _results("ch2_fusion_quick", _fusion_figures([0.51, 0.49, 0.52]))
    guide = fusion_guide(chance)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in guide.splitlines()[2:]}
    colour = next(v for k, v in rows.items() if k.startswith("questions that name one object by its shape"))
    assert "| early |" in colour                   # 0.72 vs 0.69: outside the spread
    count = next(v for k, v in rows.items() if k.startswith("questions answered from the image alone"))
    assert "not distinguishable" in count
    relation = next(v for k, v in rows.items() if k.startswith("relations"))
    assert "none: no family is distinguishable from chance" in relation
    assert "| early | early 100, middle 200, late 210 |" in guide   # fewest parameters
    learned = _results("ch2_fusion_quick", _fusion_figures([0.80, 0.81, 0.82]))
    assert "| middle | relation: best family (middle)" in fusion_guide(learned)
    sentences = fusion_sentences(learned.figures)
    assert any(s.startswith("middle fusion vs chance") and "better" in s for s in sentences)
    assert any("training* relation" in s for s in sentences)


def test_relation_chance_is_at_least_a_coin_flip():
    assert relation_chance({"majority": {"relation": 0.47}}) == 0.5
    assert relation_chance({"majority": {"relation": 0.62}}) == pytest.approx(0.62)


def test_advanced_guide_names_the_measured_option_and_the_unmeasured_ones():
    fig = {"budget": {"head_steps": 300, "head_batch": 256, "head_train": 3000, "lit_steps": 120, "lit_batch": 128,
                      "lit_train": 3000},
           "normalisation": {"none": {"text only": [0.24, 0.25, 0.23]}, "layernorm": {"text only": [0.59, 0.58, 0.60]},
                             "l2": {"text only": [0.59, 0.60, 0.58]}},
           "losses": {"InfoNCE": {"t2i_R@1": [0.44, 0.45, 0.46], "i2t_R@1": [0.4, 0.41, 0.42],
                                  "hard_negative_acc": [0.76, 0.77, 0.75]},
                      "SigLIP": {"t2i_R@1": [0.22, 0.21, 0.23], "i2t_R@1": [0.3, 0.31, 0.29],
                                 "hard_negative_acc": [0.76, 0.75, 0.77]}}}
    guide = advanced_guide(_results("ch2_advanced_quick", fig))
    assert "| layernorm or l2 (not distinguishable) |" in guide
    assert "| text-to-image retrieval (R@1) | InfoNCE |" in guide
    assert "| telling a caption from its hard negative | InfoNCE or SigLIP (not distinguishable) |" in guide
    assert guide.count("not measured here") == 2
    with pytest.raises(ValueError):
        advanced_guide()


def test_accuracy_by_kind():
    pos, neg = torch.tensor([1.0, 0.0, 2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0, 0.5])
    out = accuracy_by_kind(pos, neg, np.array(["a", "a", "b", "b"]))
    assert out == {"a": 0.5, "b": 0.5, "all": 0.5}   # a tie (0.5 vs 0.5) is not a win
    with pytest.raises(ValueError):
        accuracy_by_kind(pos, neg[:3], np.array(["a"] * 4))


def test_noisy_caption():
    rng = np.random.default_rng(0)
    assert advanced.noisy_caption("red", "circle", rng, ["red", "blue"], ["circle", "square"], p_noise=0.0) == "a red circle"
    changed = [advanced.noisy_caption("red", "circle", rng, ["blue"], ["square"], p_noise=1.0) for _ in range(50)]
    assert set(changed) == {"a blue circle", "a red square"}   # exactly one word replaced
    with pytest.raises(ValueError):
        advanced.noisy_caption("red", "circle", rng, ["red"], ["circle"], p_noise=1.5)


@pytest.fixture(scope="module")
def two_modalities():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (360,), generator=g)
    centres_i, centres_t = torch.randn(4, 12, generator=g), torch.randn(4, 8, generator=g)
    xi = centres_i[y] + 0.8 * torch.randn(360, 12, generator=g)
    xt = centres_t[y] + 0.8 * torch.randn(360, 8, generator=g)
    return advanced.TwoModalityData(xi[:300], xt[:300], y[:300], xi[300:], xt[300:], y[300:])


def test_normalisation_and_dynamic_weighting_studies_are_reproduced_by_their_seed(two_modalities):
    first = advanced.normalisation_study(two_modalities, steps=30, seed=3)
    torch.randn(100)  # whatever ran before must not matter
    assert advanced.normalisation_study(two_modalities, steps=30, seed=3) == first
    assert set(first) == {"none", "layernorm", "l2"} and set(first["none"]) == {"both", "image only", "text only"}
    table, heads = advanced.dynamic_weighting_study(two_modalities, steps=30, seed=1)
    again, _ = advanced.dynamic_weighting_study(two_modalities, steps=30, seed=1)
    assert table == again and set(heads) == {"concat", "gated", "uncertainty"}
    assert set(table["gated"]) == {"clean data", "corruption"}
    gate = advanced.gate_under_corruption(heads["gated"], two_modalities)
    assert set(gate) == {"clean", "image corrupted", "text corrupted"}
    for g in gate.values():
        assert g["gate"].shape == (60,) and 0 < g["mean"] < 1 and 0 < g["image_share"] < 1


@pytest.fixture(scope="module")
def small_vqa(tiny_clip):
    model, tok = tiny_clip
    cfg = ShapeWorldConfig(max_objects=3)
    return (vqa_features(model, tok, ShapeWorldQADataset("train", 120, cfg)),
            vqa_features(model, tok, ShapeWorldQADataset("test", 40, cfg)))


def test_compare_fusion_runs_are_reproduced_by_their_seed(small_vqa):
    """The initial weights come from settings.seed, not from the RNG state left by earlier cells."""
    train, test = small_vqa
    settings = TrainSettings(steps=5, batch_size=16, seed=2)
    a = compare_fusion(train, test, settings, kinds=("middle",), latency_batches=(), dim=16, heads=2, layers=1)
    torch.randn(1000)
    b = compare_fusion(train, test, settings, kinds=("middle",), latency_batches=(), dim=16, heads=2, layers=1)
    for (n, p), (_, q) in zip(a["middle"].model.state_dict().items(), b["middle"].model.state_dict().items()):
        torch.testing.assert_close(p, q, msg=n)
    assert a["middle"].latency_ms == {}


def test_itm_head_is_reproduced_by_its_seed_and_the_dual_encoder_needs_no_training(tiny_clip):
    model, tok = tiny_clip
    batch = generate(40, seed=11, config=ShapeWorldConfig(max_objects=3))
    feats = matching_features(model, tok, batch)
    h1, l1 = train_itm_head(feats, steps=3, seed=4, dim=16, heads=2)
    torch.randn(50)
    h2, l2 = train_itm_head(feats, steps=3, seed=4, dim=16, heads=2)
    assert l1 == l2
    torch.testing.assert_close(matching_scores(h1, feats)[0], matching_scores(h2, feats)[0])
    pos, neg = dual_encoder_scores(model, tok, batch)
    assert pos.shape == neg.shape == (40,) and bool((pos.abs() <= 1 + 1e-5).all())


@pytest.mark.parametrize("argv", [["fusion", "--seeds", "1,1"], ["fusion", "--threads", "0"], ["nothing"]])
def test_command_line_rejects_bad_options(argv):
    with pytest.raises(SystemExit):
        main(argv)
