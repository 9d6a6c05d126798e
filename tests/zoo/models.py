"""The model zoo: public architectures built from code or configs (random weights, no download).

Each entry builds a small configuration of the architecture as its library ships it, the inputs to
lower it with, and the removable units tests/zoo/plants.py plants in it: `plant(model)` writes exact zeros and returns the
widths the minimized parameters must have, `{parameter name: (axis, size)}`, counted by hand from the
architecture. Entries that do not minimize yet carry the reason (`limit`), which the coverage table in
docs/coverage.md repeats.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .plants import PLANTS, RAISED_HEADS, Widths



@dataclass
class Entry:
    name: str
    library: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[int], tuple[torch.Tensor, ...]]  # batch size -> example inputs
    plant: Callable[[torch.nn.Module], Widths] | None = None
    limit: str | None = None  # why it does not minimize yet (the test expects the failure)
    heads: int | None = None  # attention heads of all layers that raising splits into one attention each


def available(library: str) -> bool:
    return importlib.util.find_spec({"torch.nn": "torch"}.get(library, library)) is not None


def _image(size: int = 32) -> Callable[[int], tuple[torch.Tensor, ...]]:
    return lambda b: (torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(b), dtype=torch.float64),)


def _tokens(vocab: int = 100, length: int = 8) -> Callable[[int], tuple[torch.Tensor, ...]]:
    return lambda b: (torch.randint(0, vocab, (b, length), generator=torch.Generator().manual_seed(b)),)


def _sequence(features: int, length: int = 6) -> Callable[[int], tuple[torch.Tensor, ...]]:
    return lambda b: (torch.randn(b, length, features, generator=torch.Generator().manual_seed(b), dtype=torch.float64),)


def _features(channels: int, length: int) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """Channels-first features [b, channels, length] (an audio model's log-mel frames)."""
    return lambda b: (torch.randn(b, channels, length, generator=torch.Generator().manual_seed(b), dtype=torch.float64),)


def _torchvision() -> list[Entry]:
    def tv(fn: str, **kw: Any) -> Callable[[], torch.nn.Module]:
        def build() -> torch.nn.Module:
            import torchvision.models as tvm

            return getattr(tvm, fn)(weights=None, num_classes=10, **kw)

        return build

    def densenet() -> torch.nn.Module:
        import torchvision.models as tvm

        return tvm.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10)

    def convnext() -> torch.nn.Module:
        from torchvision.models import convnext as cn

        return cn.ConvNeXt([cn.CNBlockConfig(16, 32, 1), cn.CNBlockConfig(32, None, 1)], num_classes=10)

    def vit() -> torch.nn.Module:
        from torchvision.models.vision_transformer import VisionTransformer

        return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                                 num_classes=10)

    def swin() -> torch.nn.Module:
        from torchvision.models.swin_transformer import SwinTransformer

        return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[2, 2],
                               num_classes=10)

    return [
        Entry("ResNet-18", "torchvision", tv("resnet18"), _image()),
        Entry("MobileNetV2", "torchvision", tv("mobilenet_v2", width_mult=0.25), _image()),
        Entry("MobileNetV3-Small", "torchvision", tv("mobilenet_v3_small"), _image()),
        Entry("EfficientNet-B0", "torchvision", tv("efficientnet_b0"), _image()),
        Entry("RegNetY-400MF", "torchvision", tv("regnet_y_400mf"), _image()),
        Entry("SqueezeNet 1.1", "torchvision", tv("squeezenet1_1"), _image(64)),
        Entry("DenseNet (121's blocks, small)", "torchvision", densenet, _image()),
        Entry("ShuffleNetV2 x0.5", "torchvision", tv("shufflenet_v2_x0_5"), _image()),
        Entry("ConvNeXt (Tiny's blocks, small)", "torchvision", convnext, _image()),
        Entry("ViT (small)", "torchvision", vit, _image()),
        Entry("Swin (small)", "torchvision", swin, _image()),
    ]


def _timm() -> list[Entry]:
    def create(name: str, **kw: Any) -> Callable[[], torch.nn.Module]:
        def build() -> torch.nn.Module:
            import timm

            return timm.create_model(name, pretrained=False, num_classes=10, **kw)

        return build

    return [
        # timm zero-initialises each block's last norm, which makes whole blocks removable: keep them alive
        Entry("ResNet-18", "timm", create("resnet18", zero_init_last=False), _image()),
        Entry("ConvNeXt-Atto", "timm", create("convnext_atto"), _image()),
        Entry("DeiT (small)", "timm", create("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=2), _image()),
        Entry("MobileViT-XXS", "timm", create("mobilevit_xxs"), _image(64)),
        Entry("EfficientViT-B0", "timm", create("efficientvit_b0"), _image(64)),
    ]


def _transformers() -> list[Entry]:
    small = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

    def hf(config: str, model: str, **kw: Any) -> Callable[[], torch.nn.Module]:
        def build() -> torch.nn.Module:
            import transformers

            cfg = getattr(transformers, config)(**kw)
            cfg._attn_implementation = "sdpa"
            return getattr(transformers, model)(cfg)

        return build

    def whisper_encoder() -> torch.nn.Module:
        import transformers
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        # max_source_positions 8: the encoder takes 2 * 8 input frames (its second conv has stride 2)
        cfg = transformers.WhisperConfig(num_mel_bins=8, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                                         encoder_ffn_dim=64, max_source_positions=8, vocab_size=100,
                                         pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
        cfg._attn_implementation = "sdpa"
        return WhisperEncoder(cfg)

    return [
        Entry("BERT", "transformers", hf("BertConfig", "BertModel", **small), _tokens()),
        Entry("DistilBERT", "transformers",
              hf("DistilBertConfig", "DistilBertModel", vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64),
              _tokens()),
        Entry("GPT-2", "transformers", hf("GPT2Config", "GPT2Model", vocab_size=100, n_embd=32, n_layer=2, n_head=4),
              _tokens()),
        Entry("GPT-NeoX", "transformers", hf("GPTNeoXConfig", "GPTNeoXModel", **small), _tokens()),
        Entry("OPT", "transformers",
              hf("OPTConfig", "OPTModel", vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 ffn_dim=64, word_embed_proj_dim=32), _tokens()),
        Entry("Phi", "transformers", hf("PhiConfig", "PhiModel", **small), _tokens()),
        Entry("ViT", "transformers",
              hf("ViTConfig", "ViTModel", image_size=32, patch_size=8,
                 **{k: v for k, v in small.items() if k != "vocab_size"}), _image()),
        Entry("T5 encoder", "transformers",
              hf("T5Config", "T5EncoderModel", vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
              _tokens()),
        Entry("Llama", "transformers", hf("LlamaConfig", "LlamaModel", num_key_value_heads=2, **small), _tokens()),
        Entry("Mistral", "transformers", hf("MistralConfig", "MistralModel", num_key_value_heads=2, **small), _tokens()),
        Entry("Qwen2", "transformers", hf("Qwen2Config", "Qwen2Model", num_key_value_heads=2, **small), _tokens()),
        Entry("Whisper encoder", "transformers", whisper_encoder, _features(8, 16)),
    ]


class _Recurrent(torch.nn.Module):
    """nn.LSTM / nn.GRU with a linear head on its output sequence (what a tagger or a regressor is)."""

    def __init__(self, rnn: torch.nn.Module) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = torch.nn.Linear(rnn.hidden_size, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


def _torch_nn() -> list[Entry]:
    nn = torch.nn

    class MHA(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x)[0]

    return [
        Entry("TransformerEncoder", "torch.nn",
              lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2,
                                            enable_nested_tensor=False), _sequence(32)),
        Entry("MultiheadAttention", "torch.nn", MHA, _sequence(32)),
        # a recurrent layer and the head that reads it (every unit of a bare layer is a model output)
        Entry("LSTM", "torch.nn", lambda: _Recurrent(nn.LSTM(8, 16, batch_first=True)), _sequence(8)),
        Entry("GRU", "torch.nn", lambda: _Recurrent(nn.GRU(8, 16, batch_first=True)), _sequence(8)),
    ]


ZOO: list[Entry] = _torchvision() + _timm() + _transformers() + _torch_nn()


def _with_plants(zoo: list[Entry]) -> list[Entry]:
    """Each entry takes the plant tests/zoo/plants.py counts for it, and the number of heads raised."""
    names = {e.name for e in zoo}
    unknown = sorted((set(PLANTS) | set(RAISED_HEADS)) - names)
    assert not unknown, f"plants for no zoo entry: {unknown}"
    for e in zoo:
        e.plant = PLANTS.get(e.name)
        e.heads = RAISED_HEADS.get(e.name)
    return zoo


ZOO = _with_plants(ZOO)
