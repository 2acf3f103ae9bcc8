"""Token features, fusion models, task heads, BLEU, advanced fusion, LiT training, bench."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

from course_lib.data import ShapeWorldConfig, ShapeWorldQADataset
from course_lib.models import encode_images, encode_texts
from course_lib.multimodal import advanced, bench
from course_lib.multimodal.contrastive import ContrastiveData, evaluate_dual_encoder, make_contrastive_data, \
    pooled_image_features, train_dual_encoder
from course_lib.multimodal.features import image_tokens, text_tokens, unique_texts
from course_lib.multimodal.fusion import (
    FusionConfig,
    TrainSettings,
    build_fusion_model,
    evaluate_vqa,
    last_token,
    majority_baseline,
    train_vqa,
    vqa_features,
)
from course_lib.multimodal.heads import CaptionDecoder, MatchingHead, corpus_bleu
from course_lib.multimodal.losses import ContrastiveLoss


def test_token_features_pool_to_clip_embeddings(tiny_clip, scenes):
    model, tok = tiny_clip
    img = image_tokens(model, scenes.images[:6], project=True)
    assert img.shape == (6, 17, 64)
    torch.testing.assert_close(F.normalize(img[:, 0], dim=-1), encode_images(model, scenes.images[:6]))
    txt, mask = text_tokens(model, tok, scenes.captions[:6], project=True)
    torch.testing.assert_close(F.normalize(last_token(txt, mask), dim=-1), encode_texts(model, tok, scenes.captions[:6]))
    raw = pooled_image_features(model, scenes.images[:6])
    torch.testing.assert_close(F.normalize(raw @ model.visual.proj, dim=-1), encode_images(model, scenes.images[:6]))
    with pytest.raises(ValueError):
        image_tokens(model, scenes.images[:2], layer=7)
    with pytest.raises(ValueError):
        text_tokens(model, tok, [])
    uniq, idx = unique_texts(["b", "a", "b"])
    assert uniq == ["a", "b"] and idx.tolist() == [1, 0, 1]


@pytest.fixture(scope="module")
def vqa(tiny_clip):
    model, tok = tiny_clip
    cfg = ShapeWorldConfig(max_objects=3)
    return (vqa_features(model, tok, ShapeWorldQADataset("train", 300, cfg)),
            vqa_features(model, tok, ShapeWorldQADataset("test", 100, cfg)))


@pytest.mark.parametrize("kind", ["early", "middle", "late"])
def test_fusion_models_train_above_the_majority_baseline(vqa, kind):
    train, test = vqa
    count_test = test.subset(["count"])
    net = build_fusion_model(kind, FusionConfig(**train.config_dims, dim=16, heads=2, layers=1))
    before = evaluate_vqa(net, count_test).accuracy
    train_vqa(net, train.subset(["count"]), TrainSettings(steps=25, batch_size=32, lr=1e-2))
    after = evaluate_vqa(net, count_test)
    assert after.accuracy > max(majority_baseline(train, test)["count"], before) + 0.1


def test_fusion_inputs_are_validated(vqa):
    train, _ = vqa
    net = build_fusion_model("middle", FusionConfig(**train.config_dims, dim=32, layers=1))
    img, txt, mask, _ = train.batch(torch.arange(4))
    logits, maps = net(img, txt, mask, return_attention=True)
    assert logits.shape == (4, len(train.answer_vocab)) and maps.shape == (1, 4, txt.shape[1], 17)
    with pytest.raises(ValueError):
        net(img[:, 1:], txt, mask)
    with pytest.raises(ValueError):
        net(img, txt, mask.float())
    with pytest.raises(ValueError):
        build_fusion_model("hybrid", FusionConfig(**train.config_dims))
    with pytest.raises(ValueError):
        FusionConfig(image_dim=64, text_dim=64, num_answers=3, dim=30, heads=4)
    with pytest.raises(ValueError):
        train.subset(["weather"])


def test_late_fusion_cannot_tell_which_object_a_question_names(vqa):
    """Late fusion's image score cannot depend on the question: for one image, the
    image part of the logits is identical whatever is asked."""
    train, _ = vqa
    net = build_fusion_model("late", FusionConfig(**train.config_dims, dim=32, layers=1)).eval()
    img, txt, mask, _ = train.batch(torch.tensor([0, 0]))
    li, _ = net.unimodal_logits(img, txt[[0, 0]], mask[[0, 0]])
    li2, _ = net.unimodal_logits(img, txt[[1, 1]], mask[[1, 1]]) if len(train) > 1 else (li, None)
    torch.testing.assert_close(li, li2)


def test_matching_head_and_caption_decoder_shapes_and_causality():
    head = MatchingHead(64, 64, dim=32)
    img, txt = torch.randn(3, 17, 64), torch.randn(3, 6, 64)
    mask = torch.ones(3, 6, dtype=torch.bool)
    assert head(img, txt, mask).shape == (3,)
    dec = CaptionDecoder(64, vocab_size=20, max_len=10, dim=32, layers=1).eval()
    ids = torch.randint(3, 20, (2, 6))
    out = dec(img[:2], ids)
    ids2 = ids.clone()
    ids2[:, 4:] = 5
    torch.testing.assert_close(dec(img[:2], ids2)[:, :4], out[:, :4])  # no peeking ahead
    gen = dec.generate(img[:2], sot_id=2, eot_id=19, max_len=8)
    assert gen.shape[0] == 2 and gen.shape[1] <= 8 and (gen[:, 0] == 2).all()
    assert dec.loss(img[:2], ids).ndim == 0
    with pytest.raises(ValueError):
        dec(img[:2], torch.zeros(2, 11, dtype=torch.long))


def test_bleu_matches_nltk():
    refs = [[["a", "red", "circle", "left", "of", "a", "blue", "square"]],
            [["a", "small", "green", "cross"], ["a", "green", "cross"]],
            [["a", "large", "cyan", "triangle", "above", "a", "red", "square"]]]
    hyps = [["a", "red", "circle", "left", "of", "a", "blue", "square"],
            ["a", "green", "cross"],
            ["a", "cyan", "triangle", "below", "a", "red", "square"]]
    assert corpus_bleu(refs, hyps) == pytest.approx(nltk_corpus_bleu(refs, hyps), abs=1e-12)
    assert corpus_bleu(refs[:1], [["blue"]]) == 0.0
    assert nltk_corpus_bleu(refs[:1], [["blue"]]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        corpus_bleu(refs, hyps[:2])
    with pytest.raises(ValueError):
        corpus_bleu([[]], [["a"]])


def _two_view_task(n=1200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (n,), generator=g)
    protos_i, protos_t = torch.randn(5, 12, generator=g), torch.randn(5, 8, generator=g)
    xi = protos_i[y] + 0.5 * torch.randn(n, 12, generator=g)
    xt = protos_t[y] + 0.5 * torch.randn(n, 8, generator=g)
    return xi, xt, y


def test_dynamic_fusion_survives_a_corrupted_modality_better_than_concat():
    xi, xt, y = _two_view_task()
    res = {}
    for kind in ("concat", "gated", "uncertainty"):
        head = advanced.make_head(kind, 12, 8, 5, hidden=32)
        advanced.train_fusion_head(head, xi[:900], xt[:900], y[:900], steps=120, batch_size=128,
                                   lr=1e-2, corruption_prob=0.4)
        res[kind] = advanced.robustness_table(head, xi[900:], xt[900:], y[900:])
        assert res[kind]["clean"] > 0.9
    assert res["gated"]["image corrupted"] > 0.8 and res["uncertainty"]["image corrupted"] > 0.8
    _, w = head(xi[:4], xt[:4], return_weights=True)
    assert ((w >= 0) & (w <= 1)).all()


def test_modality_norm_and_corrupt_validate():
    x = torch.randn(6, 4) * 100
    assert advanced.ModalityNorm(4, "layernorm")(x).std() < 2
    torch.testing.assert_close(advanced.ModalityNorm(4, "l2")(x).norm(dim=1), torch.full((6,), 2.0))
    which = torch.tensor([True, False, False, False, False, True])
    out = advanced.corrupt(x, which, "zero")
    assert out[0].abs().sum() == 0 and torch.equal(out[1:5], x[1:5])
    with pytest.raises(ValueError):
        advanced.corrupt(x, which[:3])
    with pytest.raises(ValueError):
        advanced.ModalityNorm(4, "batch")
    with pytest.raises(ValueError):
        advanced.make_head("attention", 4, 4, 2)


def test_lit_training_learns_an_alignment(tiny_clip):
    from course_lib.data import generate

    model, tok = tiny_clip
    train = make_contrastive_data(model, tok, generate(512, 11, ShapeWorldConfig()))
    test = make_contrastive_data(model, tok, generate(128, 12, ShapeWorldConfig()))
    loss = ContrastiveLoss("infonce")
    net, hist = train_dual_encoder(train, loss, tok.vocab_size, steps=40, batch_size=128, eval_data=test, eval_every=20)
    assert hist["t2i_R@5"][-1] > hist["t2i_R@5"][0] + 0.2
    assert len(hist["temperature"]) == 40 and hist["temperature"][-1] != hist["temperature"][0]
    assert evaluate_dual_encoder(net, test)["alignment"] < 2.0
    with pytest.raises(ValueError):
        train_dual_encoder(ContrastiveData(train.image_features, train.token_ids, train.captions, train.keys),
                           loss, tok.vocab_size, steps=1, batch_size=8, use_negatives=True)


def test_bench_sinkhorn_section_and_cli(capsys):
    rows = bench.bench_sinkhorn(n=60, regs=(0.05,), repeats=1)
    assert {r["method"] for r in rows} == {"stabilized", "log"}
    assert all(r["max|P-P_pot|"] < 1e-8 for r in rows)
    table = bench._table(rows)
    assert "speed-up" in table and len(table.splitlines()) == 2 + len(rows)
    with pytest.raises(SystemExit):
        bench.main(["--sections", "nope"])


def test_caption_metrics_and_training_helpers_validate():
    from course_lib.multimodal.heads import caption_metrics, train_captioner

    m = caption_metrics(["a red circle left of a blue square", "a big blue square above a red cross"],
                        ["a red circle left of a blue square", "a small blue square above a red cross"])
    assert m["exact_match"] == 0.5 and 0 < m["bleu4"] < 1
    with pytest.raises(ValueError):
        caption_metrics(["a"], [])
    dec = CaptionDecoder(64, vocab_size=20, max_len=10, dim=16, heads=2, layers=1)
    with pytest.raises(ValueError):
        train_captioner(dec, torch.randn(3, 17, 64), torch.ones(2, 5, dtype=torch.long), steps=1)


def test_compare_fusion_gives_every_family_the_same_budget(vqa, monkeypatch):
    from course_lib.multimodal.fusion import compare_fusion, fusion_budget

    train, test = vqa
    settings = TrainSettings(steps=6, batch_size=16, lr=1e-2)
    runs = compare_fusion(train, test, settings, latency_batches=(1,), dim=16, heads=2, layers=1)
    assert list(runs) == ["early", "middle", "late"]
    for run in runs.values():
        assert len(run.history["loss"]) == 6 and run.history["eval_step"] == [6]
        row = run.as_row()
        assert row["params"] == sum(p.numel() for p in run.model.parameters()) and row["ms b=1"] > 0
    assert runs["early"].params < runs["middle"].params  # a cross- and a self-attention block per layer
    monkeypatch.setenv("COURSE_PROFILE", "quick")
    quick = fusion_budget()
    monkeypatch.setenv("COURSE_PROFILE", "full")
    full = fusion_budget()
    assert full.train_images > quick.train_images and full.settings.steps > quick.settings.steps


def test_bench_fusion_section_reports_families_and_the_relation_ladder():
    families, ladder = bench.bench_fusion(n_train=120, n_test=60, steps=3, ladder_steps=3)
    assert [r["fusion"] for r in families] == ["majority answer", "early", "middle", "late"]
    assert all(0 <= r["relation"] <= 1 for r in families)
    names = [r["relation model"] for r in ladder]
    assert names[0] == "majority answer" and len(ladder) == 4
    assert ladder[1]["accuracy"] > 0.75  # exact positions make relations easy
    assert "relation" in bench._table(families)
