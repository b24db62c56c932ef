"""sana_core.text (MiniLM + Gemma-2 CHI path), sana_core.latents (AutoencoderDC codecs), sana_core.cache."""
import json

import numpy as np
import pytest
import torch

from sana_core.cache import build_cache, load_cache
from sana_core.latents import build_codec, load_codec, psnr, to_pixels, to_uint8, train_codec
from sana_core.text import build_text_encoder, default_chi

LONGEST = "a photo of four purple triangles, three yellow diamonds, two orange hearts and a white star"


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder({"kind": "minilm", "max_length": 24})


# ------------------------------------------------------------------------------------------------------------- text
def test_minilm_encode_shapes_mask_and_null(minilm):
    emb, mask = minilm.encode(["a photo of a red circle", LONGEST])
    assert emb.shape == (2, 24, 384) and emb.dtype == torch.float32 and mask.dtype == torch.long
    # [CLS] a photo of a red circle [SEP] = 8 tokens; the longest 4-object caption = 20 tokens ≤ 24
    assert mask.sum(1).tolist() == [8, 20]
    assert torch.all(mask[0, :8] == 1) and torch.all(mask[0, 8:] == 0)        # right padding
    ne, nm = minilm.encode_null()
    assert ne.shape == (1, 24, 384) and nm[0].tolist() == [1, 1] + [0] * 22   # "" = [CLS][SEP]
    e0, m0 = minilm.encode([""])
    assert torch.equal(e0, ne) and torch.equal(m0, nm)
    # SanaPipeline preprocessing: lowercase + strip
    e1, _ = minilm.encode(["  A Photo of a RED circle "])
    assert torch.allclose(e1, emb[:1], atol=1e-6)
    # batch independence of the encoding (fixed length padding)
    e2, _ = minilm.encode([LONGEST])
    assert torch.allclose(e2, emb[1:], atol=1e-5)


def test_minilm_longest_captions_fit(minilm, shared_geneval):
    """L=24 covers the real GenEval prompts (longest 15 tokens) and our longest training wording (3 coloured groups)."""
    from sana_core.geneval.prompts import caption_from_groups
    real = [json.loads(line)["prompt"] for line in shared_geneval.read_text().splitlines() if line.strip()]
    assert max(len(minilm.tokenizer.encode(p)) for p in real) == 15
    worst = caption_from_groups([("triangle", 2, "purple"), ("diamond", 1, "yellow"), ("heart", 1, "orange")])
    assert len(minilm.tokenizer.encode(worst)) == 16 <= minilm.max_length
    minilm.encode(real[:8] + [worst, LONGEST])                               # no length error


def test_text_errors(minilm):
    with pytest.raises(ValueError, match="max_length"):
        minilm.encode(["a photo of " + "red " * 30 + "circle"])
    with pytest.raises(ValueError, match="bogus"):
        build_text_encoder({"kind": "minilm", "bogus": 1})
    with pytest.raises(ValueError, match="kind"):
        build_text_encoder({"kind": "t5"})
    with pytest.raises(ValueError, match="text.path"):
        build_text_encoder({"kind": "gemma2"})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_text_encoder({"kind": "gemma2", "path": "/nowhere/gemma"})


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    """A random 2-layer Gemma2Model + a word-level tokenizer (adds <bos>) saved to a folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import Gemma2Config, Gemma2Model, PreTrainedTokenizerFast
    d = tmp_path_factory.mktemp("gemma")
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = default_chi() + ["a photo of a red circle and a blue square", "two green triangles"]
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(d)
    cfg = Gemma2Config(vocab_size=fast.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=0, bos_token_id=2,
                       eos_token_id=1)
    torch.manual_seed(0)
    Gemma2Model(cfg).save_pretrained(d)
    return d


def test_gemma2_chi_path(tiny_gemma):
    L = 12
    te = build_text_encoder({"kind": "gemma2", "path": str(tiny_gemma), "max_length": L})
    assert te.chi == default_chi() and len(te.chi) == 8 and te.chi[-1] == "User Prompt: "
    tok, model = te.tokenizer, te.model
    prompt = "a photo of a red circle"
    emb, mask = te.encode([prompt, "two green triangles"])
    assert emb.shape == (2, L, 32) and mask.shape == (2, L)
    # reference: CHI + prompt, padded to n_chi + L - 2, keep index 0 (BOS) + the last L-1 positions
    chi = "\n".join(default_chi())
    n_chi = len(tok.encode(chi))
    ids = tok([chi + prompt], padding="max_length", max_length=n_chi + L - 2, return_tensors="pt")
    sel = [0] + list(range(-L + 1, 0))
    with torch.no_grad():
        ref = model(ids.input_ids, attention_mask=ids.attention_mask)[0][:, sel]
    assert torch.allclose(emb[:1], ref, atol=1e-5)
    kept = ids.input_ids[0, sel]
    assert kept[0].item() == tok.bos_token_id                               # BOS kept
    p_ids = tok.encode(prompt)[1:]                                           # 6 words, no BOS
    n_prompt = len(p_ids)
    # kept = BOS, the last CHI token (":"), the prompt, padding: the other n_chi - 2 CHI tokens are dropped
    assert kept.tolist() == [tok.bos_token_id, tok.encode(chi)[-1]] + p_ids + [tok.pad_token_id] * (L - 2 - n_prompt)
    assert tok.convert_ids_to_tokens(kept[1:2].tolist()) == [":"] and n_chi > 100
    assert mask[0].tolist() == [1] * (2 + n_prompt) + [0] * (L - 2 - n_prompt)
    # CHI contextualises the kept tokens: differs from the plain encoding of the prompt
    plain = tok([prompt], padding="max_length", max_length=L, return_tensors="pt")
    with torch.no_grad():
        p_emb = model(plain.input_ids, attention_mask=plain.attention_mask)[0]
    assert not torch.allclose(emb[0, 2:2 + n_prompt], p_emb[0, 1:1 + n_prompt], atol=1e-3)
    # null = "" without CHI, padded to L: [BOS, pad...]
    ne, nm = te.encode_null()
    null = tok([""], padding="max_length", max_length=L, return_tensors="pt")
    with torch.no_grad():
        ref_null = model(null.input_ids, attention_mask=null.attention_mask)[0]
    assert ne.shape == (1, L, 32) and nm[0].tolist() == [1] + [0] * (L - 1)
    assert torch.allclose(ne, ref_null, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------ codec
def _images(n, size=32, seed=0):
    from sana_core.geneval.render import random_scene, render
    from sana_core.geneval.world import world_config
    w, rng = world_config(size), np.random.default_rng(seed)
    return np.stack([render(random_scene([(w.shapes[rng.integers(len(w.shapes))], w.colors[rng.integers(10)])
                                          for _ in range(rng.integers(1, 4))], rng, w), size) for _ in range(n)])


def test_codec_shapes_scaling_and_roundtrip(tmp_path):
    c = build_codec("smoke")
    x = to_pixels(_images(3))
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), _images(3))
    z = c.encode(x)
    assert z.shape == (3, 16, 8, 8) and c.latent_shape(32) == (16, 8, 8) and c.factor == 4
    assert torch.equal(c.encode(x), z)                                   # deterministic
    c.vae.register_to_config(scaling_factor=0.5)
    z2 = c.encode(x)
    assert torch.allclose(z2, 0.5 * z, atol=1e-6)                        # latents × scaling factor
    assert torch.allclose(c.decode(z2), c.decode(z2 * 1.0), atol=0)       # decode divides it back
    assert torch.allclose(c.decode(z2), build_codec("smoke").decode(z), atol=1e-5)
    c.save(tmp_path / "vae")
    c2 = load_codec(tmp_path / "vae")
    assert c2.scaling_factor == 0.5 and torch.equal(c2.encode(x), z2) and torch.equal(c2.decode(z2), c.decode(z2))
    assert not list(tmp_path.glob(".vae*"))                              # no temp folders left
    with pytest.raises(FileNotFoundError, match="nope"):
        load_codec(tmp_path / "nope")
    with pytest.raises(ValueError, match="huge"):
        build_codec("huge")
    with pytest.raises(ValueError, match="latent_chanels"):
        build_codec({"profile": "smoke", "latent_chanels": 4})


def test_codec_channel_profiles_and_the_dit_follows_them():
    """f8c8s / f8c4s: the 64 px f8 codec with 8 / 4 latent channels; a fresh transformer of the stages takes its
    in/out channels from the codec (flows/stages/_common.new_transformer) and runs on that codec's latents."""
    from flows.stages import _common as C
    x = to_pixels(_images(2, size=64))
    params = {"model": {"profile": "smoke", "init": "pixart"}, "seed": 0}
    for name, ch in (("f8c16s", 16), ("f8c8s", 8), ("f8c4s", 4)):
        c = build_codec(name, seed=0)
        assert c.encode(x).shape == (2, ch, 8, 8) and c.latent_shape(64) == (ch, 8, 8) and c.factor == 8
        m = C.new_transformer(params, c, num_layers=1)
        assert (m.config.in_channels, m.config.out_channels, m.config.num_layers) == (ch, ch, 1)
        out = m(c.encode(x), encoder_hidden_states=torch.zeros(2, 4, 384), timestep=torch.tensor([500.0, 10.0])).sample
        assert out.shape == (2, ch, 8, 8)


def test_train_codec_improves_psnr():
    imgs = _images(256, seed=1)
    codec, rep = train_codec(imgs, "smoke", steps=15, batch_size=16, lr=2e-3, seed=0)
    # measured (smoke codec, 15 steps): 13.7 dB → 18.7 dB held-out
    assert rep["psnr"] > rep["psnr_init"] + 3.0 and rep["psnr"] > 17.0
    assert rep["n_val"] == 32 and rep["steps"] == 15
    z = codec.encode_uint8(imgs[:64])
    assert abs(z.std().item() - 1.0) < 0.2                              # calibrated scaling factor → unit-ish std
    assert psnr(codec.decode(z), to_pixels(imgs[:64])) > 17.0
    with pytest.raises(ValueError, match="uint8"):
        train_codec(imgs.astype(np.float32), "smoke", steps=1)
    # measured 18.9 dB: 15 smoke steps only reach the training set's mean image — the baseline a real codec must beat
    assert 17.0 < rep["psnr_mean_image"] < 21.0


def test_train_codec_rejects_a_collapsed_codec():
    """lr 2e-3 collapsed f8c16s to a constant image (docs/scout.md): such a codec raises instead of being saved.
    Forced here: a decoder whose last conv is zero outputs a constant, and lr 0 keeps it so."""
    imgs = _images(64, seed=2)
    codec = build_codec("smoke", seed=0)
    last = [m for m in codec.vae.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.zeros_(last.weight)
    with pytest.raises(ValueError, match="collapsed.*codec_train.lr"):
        train_codec(imgs, codec, steps=1, batch_size=8, lr=0.0)


# ------------------------------------------------------------------------------------------------------------ cache
def test_cache_roundtrip_dedup(tmp_path, minilm):
    imgs = _images(6, seed=2)
    caps = ["a photo of a red circle", "a photo of two blue squares", "a photo of a red circle",
            "a photo of a red circle", "a photo of a green star", "a photo of two blue squares"]
    codec = build_codec("smoke")
    out = build_cache(imgs, caps, codec, minilm, tmp_path / "cache", batch_size=4)
    meta = json.loads((out / "cache.json").read_text())
    assert meta["n"] == 6 and meta["n_unique_captions"] == 3 and meta["latent_shape"] == [16, 8, 8]
    assert meta["text_shape"] == [24, 384] and meta["codec"]["scaling_factor"] == 1.0
    c = load_cache(out)
    assert len(c) == 6 and c.captions == caps and c.emb.shape == (3, 24, 384) and c.emb.dtype == torch.float32
    assert torch.allclose(c.latents, codec.encode(to_pixels(imgs)), atol=1e-6)
    lat, emb, mask = c.batch([0, 1, 3])
    e_ref, m_ref = minilm.encode([caps[0], caps[1], caps[3]])
    assert torch.allclose(emb, e_ref, atol=1e-5) and torch.equal(mask, m_ref) and lat.shape == (3, 16, 8, 8)
    ne, nm = minilm.encode_null()
    assert torch.equal(c.null_emb, ne) and torch.equal(c.null_mask, nm)
    # bad input fails before anything is written
    with pytest.raises(ValueError, match="captions"):
        build_cache(imgs, caps[:5], codec, minilm, tmp_path / "bad")
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad*"))
    with pytest.raises(FileNotFoundError, match="lacks"):
        load_cache(tmp_path)
