"""Backbone loading from every weight source, block-by-block equivalence, freezing, resizing."""

from __future__ import annotations

import json
import warnings
from fractions import Fraction

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from clipmpcad import products
from clipmpcad.backbone import default_levels, load_backbone, register_model_configs
from clipmpcad.config import BackboneConfig
from clipmpcad.errors import CheckpointError, ConfigError
from clipmpcad.products import torch_kernels

TINY = "clipmpcad-tiny"


def reference_clip(seed: int = 3, image_size: int = 64, quick_gelu: bool = False) -> nn.Module:
    register_model_configs()
    torch.manual_seed(seed)
    return open_clip.create_model(TINY, force_image_size=image_size, quick_gelu=quick_gelu).eval()


def assert_same_visual(backbone, clip) -> None:
    ours = backbone.visual.state_dict()
    for key, value in clip.visual.state_dict().items():
        torch.testing.assert_close(ours[key], value.float(), msg=key)


def write_torchscript(clip: nn.Module, path) -> None:
    """An archive shaped like OpenAI's ViT-L-14-336px.pt: TorchScript, fp16, three extra ints."""

    class Archive(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, child in clip.named_children():
                self.add_module(name, child)
            for name, p in clip.named_parameters(recurse=False):
                self.register_parameter(name, p)
            for name in ("input_resolution", "context_length", "vocab_size"):
                self.register_buffer(name, torch.tensor(7))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.logit_scale

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(Archive(), torch.rand(2), check_trace=False).half()
        torch.jit.save(traced, str(path))


def test_random_tiny_backbone_reports_random(tiny_backbone) -> None:
    info = tiny_backbone.info
    assert info.random and "RANDOM" in info.describe()
    assert info.grid == (8, 8) and info.levels == (1, 2, 3, 4) and info.width == 64 and info.embed_dim == 64


def test_random_init_is_the_same_in_every_build() -> None:
    a = load_backbone(BackboneConfig(model=TINY, weights="random", image_size=64))
    b = load_backbone(BackboneConfig(model=TINY, weights="random", image_size=64))
    c = load_backbone(BackboneConfig(model=TINY, weights="random", image_size=64, init_seed=1))
    torch.testing.assert_close(a.visual.conv1.weight, b.visual.conv1.weight)
    assert not torch.equal(a.visual.conv1.weight, c.visual.conv1.weight)


def test_block_by_block_equals_encode_image() -> None:
    clip = reference_clip(seed=0)
    backbone = load_backbone(BackboneConfig(model=TINY, weights="random", image_size=64))
    images = torch.rand(3, 3, 64, 64)
    tokens = backbone.blocks(backbone.embed(images), 0, 2)
    tokens = backbone.blocks(tokens, 2, backbone.info.depth)
    torch.testing.assert_close(backbone.project(tokens)[:, 0], clip.encode_image(images), rtol=1e-4, atol=1e-5)


def test_frozen_and_always_eval(tiny_backbone) -> None:
    assert not any(p.requires_grad for p in tiny_backbone.parameters())
    tiny_backbone.train()
    assert not tiny_backbone.training and not tiny_backbone.visual.training


def test_input_size_sets_the_grid() -> None:
    backbone = load_backbone(BackboneConfig(model=TINY, weights="random", image_size=96))
    assert backbone.info.grid == (12, 12)
    assert backbone.embed(torch.rand(1, 3, 96, 96)).shape == (1, 145, 64)
    # a side the patch does not divide keeps ⌊S/p⌋ patches, like 240 px with patch 14 → 17 × 17
    odd = load_backbone(BackboneConfig(model=TINY, weights="random", image_size=100))
    assert odd.info.grid == (12, 12) and odd.embed(torch.rand(1, 3, 100, 100)).shape == (1, 145, 64)
    with pytest.raises(ConfigError, match=r"smaller than .* patch size 8"):
        load_backbone(BackboneConfig(model=TINY, weights="random", image_size=4))


def test_default_levels() -> None:
    assert default_levels(24) == (6, 12, 18, 24)
    assert default_levels(12) == (3, 6, 9, 12)
    assert default_levels(4) == (1, 2, 3, 4)
    for depth in range(1, 41):  # depth·q/4 with halves rounded up, against exact fractions
        want = {max(1, int(Fraction(depth * q, 4) + Fraction(1, 2))) for q in (1, 2, 3, 4)}
        assert default_levels(depth) == tuple(sorted(want)), depth
    assert default_levels(6) == (2, 3, 5, 6) and default_levels(10) == (3, 5, 8, 10)
    with pytest.raises(ConfigError, match=r"go past the 4 blocks"):
        load_backbone(BackboneConfig(model=TINY, weights="random", image_size=64, levels=(2, 5)))


def test_state_dict_file_with_resized_positions(tmp_path) -> None:
    clip = reference_clip(seed=5, image_size=64)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, path)
    backbone = load_backbone(BackboneConfig(model=TINY, weights=str(path), image_size=96))
    state = {k: v.clone() for k, v in clip.state_dict().items()}
    open_clip.model.resize_pos_embed(state, reference_clip(image_size=96))  # bicubic 8×8 → 12×12
    torch.testing.assert_close(backbone.visual.positional_embedding, state["visual.positional_embedding"])
    torch.testing.assert_close(backbone.visual.conv1.weight, clip.visual.conv1.weight)
    assert not backbone.info.random and backbone.info.weights == "tiny.pt" and not backbone.info.quick_gelu


def test_torchscript_archive_loads_with_quick_gelu(tmp_path) -> None:
    clip = reference_clip(seed=6, quick_gelu=True)
    path = tmp_path / "ViT-tiny-openai.pt"
    write_torchscript(clip, path)
    backbone = load_backbone(BackboneConfig(model=TINY, weights=str(path), image_size=64))
    assert backbone.info.quick_gelu
    assert isinstance(backbone.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    half = reference_clip(seed=6, quick_gelu=True).half().float()  # the archive stores fp16
    assert_same_visual(backbone, half)
    images = torch.rand(2, 3, 64, 64)
    out = backbone.project(backbone.blocks(backbone.embed(images), 0, 4))[:, 0]
    torch.testing.assert_close(out, half.encode_image(images), rtol=1e-4, atol=1e-5)
    exact = load_backbone(BackboneConfig(model=TINY, weights=str(path), image_size=64, quick_gelu=False))
    assert not exact.info.quick_gelu  # the `paper` protocol's exact GELU


def test_local_dir(tmp_path) -> None:
    clip = reference_clip(seed=7)
    folder = tmp_path / "biomed-like"
    folder.mkdir()
    register_model_configs()
    cfg = open_clip.get_model_config(TINY)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    backbone = load_backbone(BackboneConfig(model=f"local-dir:{folder}", weights=None, image_size=64))
    assert_same_visual(backbone, clip)
    assert not backbone.info.random and backbone.info.weights == "local-dir:biomed-like"
    with pytest.raises(CheckpointError, match=r"no open_clip_config\.json"):
        load_backbone(BackboneConfig(model=f"local-dir:{tmp_path}", weights=None, image_size=64))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone(BackboneConfig(model=f"local-dir:{tmp_path / 'nope'}", weights=None, image_size=64))


def test_a_local_dir_follows_its_own_config_and_never_runs_on_random_weights(tmp_path) -> None:
    register_model_configs()
    folder = tmp_path / "quick"
    folder.mkdir()
    cfg = {**open_clip.get_model_config(TINY), "quick_gelu": True}  # as DFN's or MetaCLIP's folders say
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    with pytest.raises(CheckpointError, match=r"cannot build local-dir:.*: no weights file found"):
        load_backbone(BackboneConfig(model=f"local-dir:{folder}", image_size=64))  # config alone: refused
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as caught:
        load_backbone(BackboneConfig(model=f"local-dir:{folder}", image_size=64))
    assert "\n" not in str(caught.value) and "weights_only=False" not in str(caught.value)
    clip = reference_clip(seed=8, quick_gelu=True)
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    backbone = load_backbone(BackboneConfig(model=f"local-dir:{folder}", image_size=64))
    assert backbone.info.quick_gelu and isinstance(backbone.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    images = torch.rand(2, 3, 64, 64)
    out = backbone.project(backbone.blocks(backbone.embed(images), 0, 4))[:, 0]
    torch.testing.assert_close(out, clip.encode_image(images), rtol=1e-4, atol=1e-5)
    exact = load_backbone(BackboneConfig(model=f"local-dir:{folder}", image_size=64, quick_gelu=False))
    assert not exact.info.quick_gelu  # an explicit choice still wins
    torch.save(reference_clip(seed=9, quick_gelu=True).state_dict(), folder / "open_clip_pytorch_model.bin")
    swapped = load_backbone(BackboneConfig(model=f"local-dir:{folder}", image_size=64))
    assert swapped.info.identity != backbone.info.identity  # new weights in the folder: no stale cached prototypes
    assert (
        load_backbone(BackboneConfig(model=f"local-dir:{folder}", image_size=64)).info.identity == swapped.info.identity
    )


@pytest.fixture
def tiny_tag(monkeypatch, tmp_path):
    """Register a pretrained tag for the tiny model, hosted at an address that never resolves."""
    url = "https://example.invalid/clip/models/0123abcd/tiny-openai.pt"
    tags = dict(open_clip.pretrained._PRETRAINED)
    tags[TINY] = {"testtag": open_clip.pretrained._pcfg(url=url, quick_gelu=True)}
    monkeypatch.setattr(open_clip.pretrained, "_PRETRAINED", tags)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used without --download")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    return tmp_path / "cache"


def test_pretrained_tag_from_cache_without_network(tiny_tag) -> None:
    tiny_tag.mkdir()
    clip = reference_clip(seed=8, quick_gelu=True)
    write_torchscript(clip, tiny_tag / "tiny-openai.pt")
    backbone = load_backbone(BackboneConfig(model=TINY, weights="testtag", image_size=64, cache_dir=str(tiny_tag)))
    assert backbone.info.weights == "testtag" and backbone.info.quick_gelu
    assert_same_visual(backbone, reference_clip(seed=8, quick_gelu=True).half().float())


def test_missing_tag_weights_say_where_and_how(tiny_tag) -> None:
    with pytest.raises(CheckpointError) as error:
        load_backbone(BackboneConfig(model=TINY, weights="testtag", image_size=64, cache_dir=str(tiny_tag)))
    message = str(error.value)
    assert str(tiny_tag / "tiny-openai.pt") in message
    assert "--weights FILE" in message and "--download" in message


def test_bad_weights_and_models(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone(BackboneConfig(model=TINY, weights=str(tmp_path / "missing.pt"), image_size=64))
    with pytest.raises(CheckpointError, match="neither a file nor a pretrained tag"):
        load_backbone(BackboneConfig(model=TINY, weights="laion9000", image_size=64))
    with pytest.raises(ConfigError, match=r"unknown OpenCLIP model 'ViT-Q-99'.*clipmpcad-tiny"):
        load_backbone(BackboneConfig(model="ViT-Q-99", weights="random"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_backbone(BackboneConfig(model=TINY, weights=str(junk), image_size=64))
    other = tmp_path / "other.pt"
    torch.save({"visual.conv1.weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="does not match the image tower"):
        load_backbone(BackboneConfig(model=TINY, weights=str(other), image_size=64))


def test_plain_block_forward_equals_open_clip_block(tiny_backbone) -> None:
    from clipmpcad.backbone import block_forward

    block = tiny_backbone.visual.transformer.resblocks[1]
    x = torch.randn(3, 65, 64, requires_grad=True)
    torch.testing.assert_close(block_forward(block, x), block(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # inference may keep OpenCLIP's own (fast-path) block; training the plain one
        a = tiny_backbone.blocks(x, 0, 4)
    b = tiny_backbone.blocks(x, 0, 4)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_blocks_under_cpu_bf16_autocast_take_the_plain_path(tiny_backbone, monkeypatch) -> None:
    """Under CPU autocast OpenCLIP's fused inference path is far slower, so blocks() runs the plain
    products there; the result stays within bf16 rounding of the fp32 computation."""
    import clipmpcad.backbone as backbone_module

    calls = []
    plain = backbone_module.block_forward
    monkeypatch.setattr(backbone_module, "block_forward", lambda block, x: calls.append(1) or plain(block, x))
    x = torch.randn(2, 65, 64)
    with torch.no_grad():
        with torch_kernels():
            exact = tiny_backbone.blocks(x, 0, 4)
        assert calls == []  # fp32 inference on torch's kernels: OpenCLIP's own block
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny_backbone.blocks(x, 0, 4)
        assert len(calls) == 4
        if products.ROUTE.op is not None:  # fp32 products through oneDNN: the plain block too
            tiny_backbone.blocks(torch.randn(8, 65, 64), 0, 4)
            assert len(calls) == 8
    error = (low.float() - exact).norm() / exact.norm()
    assert 0 < error < 2e-2, float(error)  # the products ran in bf16, and only rounding differs


def test_bf16_products_stored_on_a_cpu_change_no_result() -> None:
    """store_products keeps the blocks' product weights in bf16 where autocast would cast them at
    every call: outputs and input gradients are the same, only memory and time fall."""
    cfg = BackboneConfig(model=TINY, weights="random", image_size=64)
    plain, stored = load_backbone(cfg, with_text=False), load_backbone(cfg, with_text=False)
    cpu = torch.device("cpu")
    for device, precision in ((cpu, "fp32"), (cpu, "auto"), (torch.device("cuda"), "bf16")):
        stored.store_products(device, precision)  # fp32 compute, or a GPU: nothing to store
        assert stored.visual.transformer.resblocks[0].mlp.c_fc.weight.dtype == torch.float32
    stored.store_products(cpu, "bf16")
    block = stored.visual.transformer.resblocks[0]
    assert block.attn.in_proj_weight.dtype == block.mlp.c_proj.weight.dtype == torch.bfloat16
    assert block.ln_1.weight.dtype == stored.visual.proj.dtype == torch.float32
    assert stored.fingerprint == plain.fingerprint  # runs trained either way load on the same backbone
    assert not any(p.requires_grad for p in stored.parameters())
    x = torch.randn(2, 65, 64)
    outputs, grads = [], []
    for backbone in (plain, stored):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = backbone.blocks(xi, 0, 4)
        out.float().square().sum().backward()
        outputs.append(out)
        grads.append(xi.grad)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-6)


def test_auto_weights_are_the_models_usual_ones() -> None:
    from clipmpcad.weights import concrete_weights

    register_model_configs()
    assert concrete_weights("ViT-L-14-336", "auto") == "openai"
    assert concrete_weights(TINY, "auto") == "random"  # the package's tiny models have no others
    assert concrete_weights("local-dir:/x", "auto") is None  # the folder's own
    assert concrete_weights(TINY, "some.pt") == "some.pt"
    no_openai = next(
        m
        for m in open_clip.list_models()
        if open_clip.list_pretrained_tags_by_model(m) and "openai" not in open_clip.list_pretrained_tags_by_model(m)
    )
    with pytest.raises(ConfigError, match=rf"{no_openai} has no OpenAI weights; choose --weights from its tags"):
        concrete_weights(no_openai, "auto")
    backbone = load_backbone(BackboneConfig(model=TINY, image_size=64))  # the default: auto
    assert backbone.info.random


def test_an_unloadable_checkpoint_is_one_line_without_unsafe_advice(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_text('{"not": "tensors"}')
    with pytest.raises(CheckpointError) as caught:
        load_backbone(BackboneConfig(model=TINY, weights=str(bad), image_size=64))
    message = str(caught.value)
    assert message.startswith(f"cannot read checkpoint {bad}: not a file of plain tensors")
    assert "\n" not in message and "weights_only" not in message


def test_a_local_dir_with_a_broken_config_is_a_checkpoint_error(tmp_path) -> None:
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 8}}))
    with pytest.raises(CheckpointError, match=r"cannot build local-dir:.*KeyError"):
        load_backbone(BackboneConfig(model=f"local-dir:{tmp_path}", image_size=64))


def test_hf_hub_models_are_read_from_the_cache_only_unless_download(monkeypatch, tmp_path) -> None:
    from huggingface_hub import constants

    from clipmpcad.weights import offline_hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as a connected machine has it
    seen = []
    real = open_clip.create_model
    monkeypatch.setattr(
        open_clip, "create_model", lambda *a, **k: seen.append(constants.is_offline_mode()) or real(*a, **k)
    )
    with pytest.raises(CheckpointError, match=r"cannot build hf-hub:nobody/nothing.*--download fetches them"):
        load_backbone(BackboneConfig(model="hf-hub:nobody/nothing", image_size=64, cache_dir=str(tmp_path)))
    assert seen == [True] and not constants.is_offline_mode()  # offline while building, restored after
    with offline_hub(False):
        assert not constants.is_offline_mode()


def timm_clip_folder(folder, seed: int = 0):
    """A local-dir: model whose image tower is a timm ViT inside OpenCLIP's TimmModel (as
    BiomedCLIP's is), with the tiny text tower; returns the CLIP it was saved from."""
    register_model_configs()
    tiny = open_clip.get_model_config(TINY)
    vision = {"timm_model_name": "vit_tiny_patch16_224", "timm_pool": "", "timm_proj": "linear", "image_size": 224}
    cfg = {"embed_dim": tiny["embed_dim"], "vision_cfg": vision, "text_cfg": tiny["text_cfg"]}
    torch.manual_seed(seed)
    clip = open_clip.model.CLIP(**cfg).eval()
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    return clip


def test_a_timm_vit_tower_runs_block_by_block_as_its_clip_encodes(tmp_path) -> None:
    clip = timm_clip_folder(tmp_path / "biomed-like")
    backbone = load_backbone(BackboneConfig(model=f"local-dir:{tmp_path / 'biomed-like'}", image_size=64))
    info = backbone.info
    assert (info.depth, info.width, info.patch_size, info.grid, info.levels) == (12, 192, 16, (4, 4), (3, 6, 9, 12))
    assert info.embed_dim == clip.visual.head.proj.out_features and not info.quick_gelu and not info.random
    clip.visual.trunk.set_input_size(img_size=64)  # the reference, resized by timm itself
    images = torch.rand(2, 3, 64, 64)
    tokens = backbone.embed(images)
    assert tokens.shape == (2, 1 + 16, 192)
    out = backbone.project(backbone.blocks(backbone.blocks(tokens, 0, 5), 5, 12))[:, 0]
    torch.testing.assert_close(out, clip.encode_image(images), rtol=1e-4, atol=1e-5)
    with torch.enable_grad():  # training runs gradients through the frozen blocks
        x = tokens.clone().requires_grad_(True)
        backbone.blocks(x, 3, 12).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in backbone.parameters())


def test_an_image_tower_that_is_not_a_vit_is_refused_by_name(tmp_path) -> None:
    register_model_configs()
    tiny = open_clip.get_model_config(TINY)
    vision = {"timm_model_name": "resnet18", "timm_pool": "avg", "timm_proj": "linear", "image_size": 64}
    cfg = {"embed_dim": tiny["embed_dim"], "vision_cfg": vision, "text_cfg": tiny["text_cfg"]}
    folder = tmp_path / "cnn"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.save(open_clip.model.CLIP(**cfg).state_dict(), folder / "open_clip_pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"has a timm ResNet image tower; ClipMPCAD needs a ViT"):
        load_backbone(BackboneConfig(model=f"local-dir:{folder}", image_size=64))


def test_a_biomedclip_like_model_timm_image_and_hugging_face_text_towers(tmp_path) -> None:
    """BiomedCLIP's shape (a timm ViT and a BERT text tower from transformers), tiny and random:
    the folder holds the tokenizer files beside the weights, as a downloaded hub repository does."""
    pytest.importorskip("transformers")
    from tokenizers import BertWordPieceTokenizer

    bert = tmp_path / "bert-tiny"
    bert.mkdir()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    (bert / "vocab.txt").write_text("\n".join([*specials, ".", ",", "-", *letters, *("##" + c for c in letters)]))
    BertWordPieceTokenizer(str(bert / "vocab.txt"), lowercase=True).save(str(bert / "tokenizer.json"))
    names = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), specials, strict=True))
    (bert / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 64, **names}))
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    config = {"model_type": "bert", "vocab_size": 5 + 3 + 52, "max_position_embeddings": 64, **sizes}
    (bert / "config.json").write_text(json.dumps(config))
    text = {"hf_model_name": str(bert), "hf_tokenizer_name": str(bert), "hf_proj_type": "mlp", "context_length": 32}
    text |= {"hf_pooler_type": "cls_last_hidden_state_pooler", "hf_model_pretrained": False}
    vision = {"timm_model_name": "vit_tiny_patch16_224", "timm_pool": "", "timm_proj": "linear", "image_size": 224}
    cfg = {"embed_dim": 32, "vision_cfg": vision, "text_cfg": text}
    torch.manual_seed(0)
    clip = open_clip.model.CustomTextCLIP(**cfg).eval()
    folder = tmp_path / "biomed-like"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.save(clip.state_dict(), folder / "open_clip_pytorch_model.bin")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((bert / name).read_bytes())
    backbone = load_backbone(BackboneConfig(model=f"local-dir:{folder}", image_size=64))
    sentences = ["a photo of a lesion in a brain scan", "a normal chest x-ray"]
    reference = clip.encode_text(open_clip.get_tokenizer(f"local-dir:{folder}")(sentences))
    torch.testing.assert_close(backbone.encode_text(backbone.tokenize(sentences)), reference, rtol=1e-4, atol=1e-5)
    clip.visual.trunk.set_input_size(img_size=64)
    images = torch.rand(2, 3, 64, 64)
    out = backbone.project(backbone.blocks(backbone.embed(images), 0, 12))[:, 0]
    torch.testing.assert_close(out, clip.encode_image(images), rtol=1e-4, atol=1e-5)
