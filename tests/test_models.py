import hashlib
import json

import numpy as np
import open_clip
import pytest
import torch

from course_lib.data import ShapeWorldConfig, generate, images_to_tensor, split_seed, vocabulary
from course_lib.models import (
    BUNDLED_CHECKPOINT,
    BUNDLED_SHA256,
    SHAPEWORLD_MEAN,
    SHAPEWORLD_STD,
    TEMPLATES,
    CheckpointError,
    WordTokenizer,
    build_tiny_clip,
    encode_images,
    encode_texts,
    load_clip,
    load_default_clip,
    load_tiny_clip,
    parse_model_spec,
    prepare_images,
    recall_at_ks,
    retrieval_evaluate,
    tiny_tokenizer,
    zero_shot_evaluate,
)
from course_lib.models.train_tiny_clip import TrainConfig, state_bytes, train_tiny_clip, training_pool


@pytest.fixture(scope="module")
def tiny():
    return load_clip("tiny")


# ------------------------------------------------------------------ tokenizer


def test_tokenizer_round_trip():
    tok = tiny_tokenizer()
    text = "is the red circle left of the blue square ?"
    ids = tok(text)
    assert ids.shape == (1, 24) and ids.dtype == torch.long
    assert ids[0, 0] == tok.sot_id
    assert tok.decode(ids[0]) == text
    assert ids[0].argmax() == len(text.split()) + 1  # open_clip pools at argmax = <eot>
    assert tok.eot_id == tok.vocab_size - 1


def test_tokenizer_batch_and_padding():
    tok = tiny_tokenizer()
    ids = tok(["a red circle", "a small blue square above a green cross"])
    assert ids.shape == (2, 24)
    assert (ids[0, 5:] == tok.pad_id).all()
    assert tok.decode(ids[1]) == "a small blue square above a green cross"


def test_tokenizer_unknown_words_are_explicit():
    tok = tiny_tokenizer()
    with pytest.raises(KeyError, match="hexagon"):
        tok("a red hexagon")
    with pytest.raises(KeyError, match="3"):
        tok("a 3 circle")
    lenient = tiny_tokenizer(on_unknown="unk")
    ids = lenient("a red hexagon")
    assert ids[0, 3] == lenient.stoi["<unk>"]
    assert tok.unknown_words("a red hexagon !") == ["hexagon", "!"]


def test_tokenizer_bad_input():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="empty"):
        tok([])
    with pytest.raises(ValueError, match="context_length"):
        tok(" ".join(["red"] * 30))
    with pytest.raises(TypeError):
        tok([3])
    with pytest.raises(ValueError):
        WordTokenizer(on_unknown="ignore")
    with pytest.raises(ValueError):
        tok.decode([tok.vocab_size])


def test_tokenizer_covers_vocabulary_and_templates():
    tok = tiny_tokenizer()
    assert set(vocabulary()) <= set(tok.itos)
    for t in TEMPLATES:
        tok(t.format("red circle"))


# ------------------------------------------------------------------ model


def test_tiny_clip_is_open_clip_model():
    model = build_tiny_clip()
    assert isinstance(model, open_clip.model.CLIP)
    x = torch.rand(2, 3, 32, 32)
    t = tiny_tokenizer()(["a red circle", "a blue cross"])
    img, txt, scale = model(x, t)
    assert img.shape == txt.shape == (2, 64)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_pixel_statistics_match_normalisation():
    images, _ = training_pool(4000, seed=3)
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor(SHAPEWORLD_MEAN), atol=0.02)
    assert torch.allclose(std, torch.tensor(SHAPEWORLD_STD), atol=0.02)


def test_bundled_checkpoint_integrity():
    data = BUNDLED_CHECKPOINT.read_bytes()
    assert len(data) <= 5_000_000
    assert hashlib.sha256(data).hexdigest() == BUNDLED_SHA256
    payload = torch.load(BUNDLED_CHECKPOINT, weights_only=True)
    assert set(payload) == {"state_dict", "train_config"}


def test_corrupted_or_missing_checkpoint_raises(tmp_path):
    bad = tmp_path / "tiny.pt"
    data = bytearray(BUNDLED_CHECKPOINT.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_tiny_clip(bad, expected_sha256=BUNDLED_SHA256)
    with pytest.raises(CheckpointError, match="not found"):
        load_tiny_clip(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not read"):
        load_tiny_clip(junk)
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"visual.proj": torch.zeros(3)}}, wrong)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_tiny_clip(wrong)


def test_unknown_model_name_raises():
    with pytest.raises(ValueError, match="unknown model"):
        load_clip("ViT-Z-99")
    with pytest.raises(CheckpointError, match="not found"):
        load_clip("ViT-B-32", pretrained="/nonexistent/weights.pt")


def test_open_clip_architecture_from_local_file(tmp_path):
    """load_clip goes through open_clip's own factory for a named architecture + local file."""
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "course-test-arch.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "course-test-arch.json")
    src = open_clip.create_model("course-test-arch")
    ckpt = tmp_path / "weights.pt"
    torch.save(src.state_dict(), ckpt)
    model, preprocess, tokenizer = load_clip("course-test-arch", pretrained=str(ckpt))
    for (k, a), b in zip(src.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    emb = encode_images(model, generate(3, 0).images)
    assert emb.shape == (3, 32)
    assert encode_texts(model, tokenizer, ["a red circle"]).shape == (1, 32)
    assert preprocess is not None


def test_parse_model_spec_and_default(monkeypatch):
    assert parse_model_spec("ViT-B-32:openai") == ("ViT-B-32", "openai")
    assert parse_model_spec("tiny") == ("tiny", None)
    assert parse_model_spec("ViT-B-32:/x/y.pt") == ("ViT-B-32", "/x/y.pt")
    with pytest.raises(ValueError):
        parse_model_spec("  ")
    monkeypatch.setenv("COURSE_MODEL", "tiny")
    model, _, tok = load_default_clip()
    assert isinstance(tok, WordTokenizer)


def test_prepare_images_validates():
    model = build_tiny_clip()
    with pytest.raises(ValueError, match="empty"):
        prepare_images(model, torch.zeros(0, 3, 32, 32))
    with pytest.raises(ValueError, match="NaN"):
        prepare_images(model, torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(TypeError, match="float"):
        prepare_images(model, torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    out = prepare_images(model, torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 3, 32, 32)


def test_preprocess_matches_batched_path(tiny):
    model, preprocess, _ = tiny
    images = generate(4, 1).images
    a = torch.stack([preprocess(im) for im in images])
    b = prepare_images(model, images)
    assert torch.allclose(a, b, atol=1e-5)


# ------------------------------------------------------------------ quality


def test_zero_shot_accuracy_floor(tiny):
    """The bundled tiny CLIP classifies the 24 colour x shape classes zero-shot (>= 90%)."""
    model, _, tok = tiny
    cfg = ShapeWorldConfig()
    test = generate(1000, split_seed("test", 0), cfg)
    res = zero_shot_evaluate(model, tok, test.images, test.labels, cfg.class_names)
    assert res.accuracy >= 0.90, f"zero-shot accuracy {res.accuracy:.3f}"
    cm = res.confusion_matrix()
    assert cm.shape == (24, 24) and cm.sum() == 1000
    assert np.trace(cm) == round(res.accuracy * 1000)


def test_retrieval_beats_chance_by_far(tiny):
    model, _, tok = tiny
    test = generate(500, split_seed("test", 1), ShapeWorldConfig(max_objects=3))
    r = retrieval_evaluate(model, tok, test.images, test.captions, ks=(1, 5))
    assert r["image_to_text"][5] > 0.5 and r["text_to_image"][5] > 0.5  # chance is ~0.01


def test_recall_at_ks_hand_worked():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1]])
    rel = torch.tensor([[False, False, True], [False, False, True]])
    r = recall_at_ks(sim, rel, ks=(1, 2, 3))
    assert r == {1: 0.0, 2: 0.5, 3: 1.0}
    with pytest.raises(ValueError, match="gallery"):
        recall_at_ks(sim, rel, ks=(4,))
    with pytest.raises(ValueError, match="NaN"):
        recall_at_ks(sim * float("nan"), rel, ks=(1,))
    with pytest.raises(ValueError):
        recall_at_ks(sim, rel[:1], ks=(1,))


def test_zero_shot_bad_labels(tiny):
    model, _, tok = tiny
    b = generate(4, 0)
    with pytest.raises(ValueError, match="labels"):
        zero_shot_evaluate(model, tok, b.images, b.labels + 100, b.config.class_names)
    with pytest.raises(ValueError, match="labels"):
        zero_shot_evaluate(model, tok, b.images, b.labels[:2], b.config.class_names)


def test_training_is_deterministic_and_learns():
    cfg = TrainConfig(steps=6, batch_size=32, pool_size=256, warmup_steps=2)
    m1, l1 = train_tiny_clip(cfg, device="cpu", progress=False)
    m2, l2 = train_tiny_clip(cfg, device="cpu", progress=False)
    assert l1 == l2
    assert state_bytes(m1, cfg) == state_bytes(m2, cfg)
    assert l1[-1] < l1[0]


def test_model_fingerprint_tracks_every_weight():
    from course_lib.models import model_fingerprint

    a, b = build_tiny_clip(), build_tiny_clip()
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
    assert len(model_fingerprint(a)) == 12 and len(model_fingerprint(a, length=64)) == 64
    with torch.no_grad():
        b.logit_scale.add_(1e-6)  # one scalar, the smallest change
    assert model_fingerprint(a) != model_fingerprint(b)
    with pytest.raises(ValueError, match="length"):
        model_fingerprint(a, length=0)



def test_step_anatomy_accounts_for_the_step():
    from course_lib.models.step_anatomy import FAMILIES, PHASES, op_family, step_anatomy

    assert op_family("aten::addmm") == "matrix products"
    assert op_family("aten::_scaled_dot_product_flash_attention_for_cpu_backward") == "attention"
    assert op_family("aten::copy_") == "copies and layout" and op_family("aten::gelu") == "other"
    a = step_anatomy(batch_size=16, steps=2, warmup=1)
    assert tuple(a.phases_ms) == PHASES and tuple(a.families_ms) == FAMILIES
    assert all(v >= 0 for v in a.phases_ms.values()) and a.step_ms > 0
    assert a.phases_ms["image forward"] > 0 and a.phases_ms["backward"] > 0
    assert a.families_ms["matrix products"] > 0 and a.families_ms["attention"] > 0
    # the profiler's FLOP count of the matrix products: at least the image tower's forward
    # Linear layers (4 blocks x 17 tokens x (3+1+2+2) x 128 x 128 multiply-adds per image)
    assert a.matmul_gflop >= 16 * 4 * 17 * 8 * 128 * 128 * 2 / 1e9
    assert a.matmul_gflops > 0 and "GFLOP/s" in a.table()
    with pytest.raises(ValueError, match="batch_size"):
        step_anatomy(batch_size=1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # torch.ao is deprecated
def test_model_fingerprint_bad_input():
    from course_lib.compression.quantization import quantize_dynamic_int8
    from course_lib.models import model_fingerprint

    with pytest.raises(ValueError, match="length"):
        model_fingerprint(build_tiny_clip(), length=65)
    packed = quantize_dynamic_int8(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    with pytest.raises(TypeError, match="packed quantized"):
        model_fingerprint(packed)


def test_train_step_rejects_bad_batches_and_non_finite_loss():
    from open_clip.loss import ClipLoss

    from course_lib.models.train_tiny_clip import make_optimizer, train_step

    model = build_tiny_clip().train()
    opt, loss_fn = make_optimizer(model, TrainConfig()), ClipLoss()
    x, t = torch.randn(4, 3, 32, 32), tiny_tokenizer()(["a red circle", "a blue cross", "a green square", "a cyan circle"])
    with pytest.raises(ValueError, match="batch"):
        train_step(model, opt, loss_fn, x, t[:3], 1e-3)
    with pytest.raises(ValueError, match="batch"):
        train_step(model, opt, loss_fn, x[:1], t[:1], 1e-3)
    with pytest.raises(ValueError, match="lr"):
        train_step(model, opt, loss_fn, x, t, float("nan"))
    loss = train_step(model, opt, loss_fn, x, t, 1e-3)
    assert np.isfinite(loss)
    with pytest.raises(FloatingPointError, match="NaN"):
        train_step(model, opt, loss_fn, x * float("nan"), t, 1e-3)


def test_anatomy_cli_rejects_training_options():
    from course_lib.models.train_tiny_clip import main

    with pytest.raises(SystemExit):
        main(["--anatomy", "--steps", "10"])


@pytest.mark.filterwarnings("ignore::UserWarning")  # quantized tensor creation is deprecated in torch
def test_model_fingerprint_of_quantized_tensors():
    from course_lib.models import model_fingerprint

    def holder(values):
        m = torch.nn.Module()
        m.register_buffer("w", torch.quantize_per_tensor(torch.tensor(values), 0.1, 0, torch.qint8))
        return m

    assert model_fingerprint(holder([0.1, 0.2])) == model_fingerprint(holder([0.1, 0.2]))
    assert model_fingerprint(holder([0.1, 0.2])) != model_fingerprint(holder([0.1, 0.3]))
