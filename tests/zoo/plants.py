"""Planted units for the zoo (tests/zoo/models.py): each plant writes exact zeros into a built model and
returns the widths the minimized parameters must have, `{parameter name: (axis, size)}`, counted by hand
from the architecture; `random_mask` adds the unstructured zeros a pruned model has around them."""
from __future__ import annotations

import operator
from typing import Any, Callable

import torch

Widths = dict[str, tuple[int, int]]


@torch.no_grad()
def random_mask(model: torch.nn.Module, sparsity: float = 0.5, seed: int = 1, min_fan: int = 16) -> None:
    """Unstructured pruning as a user's masks leave it: `sparsity` of the weights of every conv and linear
    layer set to 0 at random. Layers with fewer than `min_fan` inputs or outputs are left dense, so that
    chance alone kills no whole row or column (for fan 16 at half sparsity, 1 in 65,536) and the widths
    the plants count stay exact."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        if (isinstance(mod, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)) and w is not None
                and w[0].numel() >= min_fan and w.shape[0] * w[0, 0].numel() >= min_fan):
            w.mul_((torch.rand(w.shape, generator=g, dtype=w.dtype) >= sparsity).to(w.dtype))


def _get(model: Any, path: str) -> Any:
    return operator.attrgetter(path)(model)


@torch.no_grad()
def _revive(model: Any) -> None:
    """timm zero-initialises the last norm of each residual branch, which makes whole blocks removable;
    a trained model has no such blocks."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d) and mod.weight is not None and not mod.weight.any():
            mod.weight.fill_(1.0)


def _expansion(block: str, expand: str, expand_bn: str, dw: str, project: str, c: int = 1,
               revive: bool = False) -> Callable[[Any], Widths]:
    """An inverted-residual expansion channel zero after its norm: act(0) = 0 (ReLU, SiLU, hardswish), the
    depthwise conv keeps it 0, its norm turns it into a constant, which the projection folds into its bias:
    the expansion conv, the depthwise conv and the projection all lose the channel."""
    @torch.no_grad()
    def plant(model: Any) -> Widths:
        if revive:
            _revive(model)
        _zero_bn_channel(_get(model, f"{block}.{expand_bn}"), c)
        e = _get(model, f"{block}.{expand}").weight.shape[0]
        return {f"{block}.{expand}.weight": (0, e - 1), f"{block}.{dw}.weight": (0, e - 1),
                f"{block}.{project}.weight": (1, e - 1)}
    return plant


def _mlp(fc1: str, fc2: str, dead: int = 7, unused: int = 11, conv1d: bool = False) -> Callable[[Any], Widths]:
    """MLP unit `dead` has a zero row and bias in the first layer (its activation is 0 at 0: GELU, ReLU,
    SiLU), unit `unused` a zero column in the second: both layers lose both units. `conv1d`: GPT-2's
    Conv1D stores weights transposed ([in, out]); the program holds them as `weight_t` ([out, in])."""
    @torch.no_grad()
    def plant(model: Any) -> Widths:
        a, b = _get(model, fc1), _get(model, fc2)
        if conv1d:
            a.weight[:, dead] = 0
            b.weight[unused] = 0
        else:
            a.weight[dead] = 0
            b.weight[:, unused] = 0
        a.bias[dead] = 0
        h = a.bias.shape[0]
        w = "weight_t" if conv1d else "weight"  # the lowering reads Conv1D as a linear of the transpose
        return {f"{fc1}.{w}": (0, h - 2), f"{fc2}.{w}": (1, h - 2)}
    return plant


@torch.no_grad()
def _se_block(prefix: str, expand: str, dw: str, dw_bn: str, se1: str, se2: str, project: str, c: int = 5) -> Callable[[Any], Widths]:
    """A squeeze-excitation block's depthwise channel zero after its norm: act(0) = 0, so the SE pools 0
    for it and scales a 0, and the projection reads 0: the expansion and depthwise convs, the SE's
    reduce column and expand row, and the projection's column all go."""
    @torch.no_grad()
    def plant(model: Any) -> Widths:
        _zero_bn_channel(_get(model, f"{prefix}.{dw_bn}"), c)
        e = _get(model, f"{prefix}.{dw}").weight.shape[0]
        w = {f"{prefix}.{dw}.weight": (0, e - 1), f"{prefix}.{se1}.weight": (1, e - 1),
             f"{prefix}.{se2}.weight": (0, e - 1), f"{prefix}.{project}.weight": (1, e - 1)}
        if expand:
            w[f"{prefix}.{expand}.weight"] = (0, e - 1)
        return w
    return plant


@torch.no_grad()
def _fire(model: Any) -> Widths:
    """SqueezeNet fire module features[3]: squeeze filter 3 is all zero with bias 0, so ReLU gives 0 and
    both expand convs (1x1 and the zero-padded 3x3) lose that input channel."""
    sq = model.features[3].squeeze
    sq.weight[3] = 0
    sq.bias[3] = 0
    s = sq.weight.shape[0]
    return {"features.3.squeeze.weight": (0, s - 1), "features.3.expand1x1.weight": (1, s - 1),
            "features.3.expand3x3.weight": (1, s - 1)}


@torch.no_grad()
def _dense_layer(model: Any) -> Widths:
    """DenseNet layer denseblock1.denselayer1: bottleneck channel 4 zero after norm2, so ReLU gives 0 and
    the 3x3 conv loses the input channel and the 1x1 bottleneck conv the filter."""
    lyr = model.features.denseblock1.denselayer1
    _zero_bn_channel(lyr.norm2, 4)
    b = lyr.conv1.weight.shape[0]
    p = "features.denseblock1.denselayer1"
    return {f"{p}.conv1.weight": (0, b - 1), f"{p}.conv2.weight": (1, b - 1)}


@torch.no_grad()
def _heads(in_proj: str, out_proj: str, heads: int, head: int = 1) -> Callable[[Any], Widths]:
    """A packed-projection attention (nn.MultiheadAttention): head `head`'s value rows and bias are zero,
    so it writes 0 whatever it attends to: its query, key and value rows and the output projection's
    columns all go."""
    @torch.no_grad()
    def plant(model: Any) -> Widths:
        w, b = _get(model, in_proj + "_weight"), _get(model, in_proj + "_bias")
        d = w.shape[1]
        hd = d // heads
        rows = slice(2 * d + head * hd, 2 * d + (head + 1) * hd)
        w[rows] = 0
        b[rows] = 0
        return {in_proj + "_weight": (0, 3 * (d - hd)), out_proj + ".weight": (1, d - hd)}
    return plant


def _split_heads(attn: str, q: str, k: str, v: str, o: str, heads: int, kv_heads: int | None = None,
                 head: int = 1) -> Callable[[Any], Widths]:
    """Separate q/k/v/output projections (Hugging Face attention): key/value head `head`'s value rows
    (and bias, where there is one) are zero, so every query head that reads it writes 0 whatever it
    attends to. Those query heads' query rows, the key/value head's key and value rows and the output
    projection's columns for those query heads all go. With grouped-query attention (`kv_heads` <
    `heads`) the `heads // kv_heads` query heads of the group go together."""
    @torch.no_grad()
    def plant(model: Any) -> Widths:
        g = kv_heads or heads
        vp = _get(model, f"{attn}.{v}")
        w = vp.weight
        d = _get(model, f"{attn}.{q}").weight.shape[0]  # query width = heads * hd
        hd = d // heads
        w[head * hd:(head + 1) * hd] = 0
        if vp.bias is not None:
            vp.bias[head * hd:(head + 1) * hd] = 0
        r = heads // g  # query heads per key/value head
        kv = g * hd
        return {f"{attn}.{q}.weight": (0, d - r * hd), f"{attn}.{k}.weight": (0, kv - hd),
                f"{attn}.{v}.weight": (0, kv - hd), f"{attn}.{o}.weight": (1, d - r * hd)}
    return plant


def _packed_heads(attn: str, qkv: str, o: str, heads: int, head: int = 1) -> Callable[[Any], Widths]:
    """GPT-2's packed c_attn (a Conv1D: weight [e, 3e], read as `weight_t` [3e, e]): head `head`'s value
    columns and bias are zero, so its query, key and value rows of `weight_t` and the output
    projection's columns go (as `_heads` for nn.MultiheadAttention)."""
    @torch.no_grad()
    def plant(model: Any) -> Widths:
        c = _get(model, f"{attn}.{qkv}")
        e = c.weight.shape[0]
        hd = e // heads
        cols = slice(2 * e + head * hd, 2 * e + (head + 1) * hd)
        c.weight[:, cols] = 0
        c.bias[cols] = 0
        return {f"{attn}.{qkv}.weight_t": (0, 3 * (e - hd)), f"{attn}.{o}.weight_t": (1, e - hd)}
    return plant


def _interleaved_heads(attn: str, qkv: str, o: str, heads: int, head: int = 1) -> Callable[[Any], Widths]:
    """GPT-NeoX's query_key_value packs each head's q, k, v together (rows [i * 3d, (i + 1) * 3d) for head
    i): head `head`'s value rows and bias are zero, so its whole block of 3d rows and the output
    projection's columns go."""
    @torch.no_grad()
    def plant(model: Any) -> Widths:
        c = _get(model, f"{attn}.{qkv}")
        d = c.weight.shape[0] // (3 * heads)
        rows = slice(head * 3 * d + 2 * d, (head + 1) * 3 * d)
        c.weight[rows] = 0
        c.bias[rows] = 0
        return {f"{attn}.{qkv}.weight": (0, 3 * d * (heads - 1)), f"{attn}.{o}.weight": (1, d * (heads - 1))}
    return plant


def _conv_filter(first: str, second: str, c: int = 3) -> Callable[[Any], Widths]:
    """Filter `c` of conv `first` is zero with bias 0, and its activation is 0 at 0 (GELU, ReLU): the
    next conv reads an exactly-zero channel, which survives its zero padding, so it loses the input
    channel and `first` the filter (Whisper's conv1d stem)."""
    @torch.no_grad()
    def plant(model: Any) -> Widths:
        a = _get(model, first)
        a.weight[c] = 0
        a.bias[c] = 0
        n = a.weight.shape[0]
        return {f"{first}.weight": (0, n - 1), f"{second}.weight": (1, n - 1)}
    return plant


def _all(*plants: Callable[[Any], Widths]) -> Callable[[Any], Widths]:
    """Several plants in one model (an MLP unit and an attention head): their widths together."""
    def plant(model: Any) -> Widths:
        widths: Widths = {}
        for p in plants:
            widths.update(p(model))
        return widths
    return plant


@torch.no_grad()
def _zero_bn_channel(bn: torch.nn.Module, c: int) -> None:
    """An exact zero channel: gamma and beta 0, so the norm writes 0 whatever its statistics."""
    bn.weight[c] = 0
    bn.bias[c] = 0


def _plant_basic_block(prefix: str, block: Any) -> Widths:
    """ResNet basic block: channel 3 between conv1 and conv2 is zero, so conv1 loses a filter and conv2
    an input channel (the block's output joins the residual stream and stays)."""
    _zero_bn_channel(block.bn1, 3)
    w = block.conv1.weight.shape[0]
    return {f"{prefix}.conv1.weight": (0, w - 1), f"{prefix}.conv2.weight": (1, w - 1)}


def _plant_resnet(model: Any) -> Widths:
    return _plant_basic_block("layer1.0", model.layer1[0])


def _plant_inverted_residual(model: Any) -> Widths:
    """MobileNetV2 block features[2]: expansion channel 1 zero after its norm. relu6(0) = 0, the depthwise
    conv keeps it 0, its norm makes it a constant, and the 1x1 projection folds that constant into its
    bias: the expansion conv, the depthwise conv and the projection all lose that channel."""
    conv = model.features[2].conv
    _zero_bn_channel(conv[0][1], 1)
    e = conv[0][0].weight.shape[0]
    return {"features.2.conv.0.0.weight": (0, e - 1), "features.2.conv.1.0.weight": (0, e - 1),
            "features.2.conv.2.weight": (1, e - 1)}


@torch.no_grad()
def _plant_cn_block(model: Any) -> Widths:
    """ConvNeXt block features[1][0]: MLP unit 5 has a zero row and bias in the first pointwise linear,
    so GELU(0) = 0 reaches the second one, which loses the column."""
    block = model.features[1][0].block
    block[3].weight[5] = 0
    block[3].bias[5] = 0
    h = block[3].weight.shape[0]
    return {"features.1.0.block.3.weight": (0, h - 1), "features.1.0.block.5.weight": (1, h - 1)}


@torch.no_grad()
def _plant_bert(model: Any) -> Widths:
    """BERT layer 0: MLP unit 7 has a zero row and bias (GELU(0) = 0), so the output dense loses a column."""
    lyr = model.encoder.layer[0]
    lyr.intermediate.dense.weight[7] = 0
    lyr.intermediate.dense.bias[7] = 0
    h = lyr.intermediate.dense.weight.shape[0]
    return {"encoder.layer.0.intermediate.dense.weight": (0, h - 1), "encoder.layer.0.output.dense.weight": (1, h - 1)}


@torch.no_grad()
def _plant_gated_mlp(model: Any) -> Widths:
    """Llama-style decoder layer 0 (Mistral, Qwen2 alike): gated MLP unit 5 has a zero gate row, so
    silu(0) * up = 0 reaches the down projection, which loses the column; gate and up lose the row.
    The norms around it compute in float32 (HF RMSNorm's casts), which the minimized model keeps."""
    mlp = model.layers[0].mlp
    mlp.gate_proj.weight[5] = 0
    h = mlp.gate_proj.weight.shape[0]
    return {"layers.0.mlp.gate_proj.weight": (0, h - 1), "layers.0.mlp.up_proj.weight": (0, h - 1),
            "layers.0.mlp.down_proj.weight": (1, h - 1)}


@torch.no_grad()
def _plant_t5(model: Any) -> Widths:
    """T5 block 0: feed-forward unit 5 has a zero row in `wi` (no bias, relu(0) = 0), so `wo` loses the
    column. (Its norm multiplies float64 activations by a float32 rsqrt: lowered as an explicit cast.)"""
    ff = model.encoder.block[0].layer[1].DenseReluDense
    ff.wi.weight[5] = 0
    h = ff.wi.weight.shape[0]
    return {"encoder.block.0.layer.1.DenseReluDense.wi.weight": (0, h - 1),
            "encoder.block.0.layer.1.DenseReluDense.wo.weight": (1, h - 1)}



# grouped-query attention, 4 query heads over 2 key/value heads (Llama, Mistral, Qwen2): key/value head 1
# is dead, so query heads 2 and 3 go with it
_GQA_HEAD = _split_heads("layers.0.self_attn", "q_proj", "k_proj", "v_proj", "o_proj", 4, kv_heads=2)

def _recurrent(gates: int, unused: int = 3, dead: int = 9) -> Callable[[Any], Widths]:
    """nn.LSTM (4 gates) / nn.GRU (3) under a linear head (tests/zoo/models.py `_Recurrent`): unit `unused`
    is read by no unit (recurrent column zero in every gate) and not by the head (zero column); unit
    `dead` has every gate row and bias zero, so its state stays 0 (LSTM: i = f = o = 1/2, g = 0; GRU:
    z = 1/2, candidate 0), and no unit reads it either. Both go: 2 of the m units, in the rows of
    every gate (the program holds a gate weight [G*m, n] as [G, m, n]), the recurrent columns and the
    head's columns."""
    @torch.no_grad()
    def plant(model: Any) -> Widths:
        rnn, head = model.rnn, model.head
        m = rnn.hidden_size
        rows = [q * m + dead for q in range(gates)]
        rnn.weight_ih_l0[rows] = 0
        rnn.weight_hh_l0[rows] = 0
        rnn.bias_ih_l0[rows] = 0
        rnn.bias_hh_l0[rows] = 0
        rnn.weight_hh_l0[:, [unused, dead]] = 0
        head.weight[:, unused] = 0
        return {"rnn.weight_ih_l0": (1, m - 2), "rnn.weight_hh_l0": (2, m - 2), "rnn.bias_ih_l0": (1, m - 2),
                "rnn.bias_hh_l0": (1, m - 2), "head.weight": (1, m - 2)}
    return plant


PLANTS: dict[str, Callable[[Any], Widths]] = {
    "ResNet-18": _plant_resnet,  # torchvision's and timm's alike
    "MobileNetV2": _plant_inverted_residual,
    "ConvNeXt (Tiny's blocks, small)": _plant_cn_block,
    "BERT": _all(_plant_bert, _split_heads("encoder.layer.0.attention", "self.query", "self.key", "self.value",
                                           "output.dense", 4)),
    # T5's relative position bias [1, h, l, s] is the mask of the raised heads: the dead head's slice goes with it
    "T5 encoder": _all(_plant_t5, _split_heads("encoder.block.0.layer.0.SelfAttention", "q", "k", "v", "o", 4)),
    "Llama": _all(_plant_gated_mlp, _GQA_HEAD),
    "Mistral": _all(_plant_gated_mlp, _GQA_HEAD),
    "Qwen2": _all(_plant_gated_mlp, _GQA_HEAD),
    "MobileNetV3-Small": _expansion("features.2.block", "0.0", "0.1", "1.0", "2.0", 5),
    "EfficientNet-B0": _se_block("features.2.0.block", "0.0", "1.0", "1.1", "2.fc1", "2.fc2", "3.0"),
    "RegNetY-400MF": _mlp("trunk_output.block1.block1-0.f.se.fc1", "trunk_output.block1.block1-0.f.se.fc2", 2, 5),
    "SqueezeNet 1.1": _fire,
    "DenseNet (121's blocks, small)": _dense_layer,
    "ShuffleNetV2 x0.5": _expansion("stage2.0.branch2", "0", "1", "3", "5", 3),
    "Swin (small)": _mlp("features.1.0.mlp.0", "features.1.0.mlp.3"),
    "EfficientViT-B0": _expansion("stages.1.blocks.0.main", "inverted_conv.conv", "inverted_conv.norm",
                                  "depth_conv.conv", "point_conv.conv", 3),
    "ViT (small)": _mlp("encoder.layers.encoder_layer_0.mlp.0", "encoder.layers.encoder_layer_0.mlp.3"),
    "ConvNeXt-Atto": _mlp("stages.0.blocks.0.mlp.fc1", "stages.0.blocks.0.mlp.fc2"),
    "DeiT (small)": _mlp("blocks.0.mlp.fc1", "blocks.0.mlp.fc2"),
    "MobileViT-XXS": _expansion("stages.0.0", "conv1_1x1.conv", "conv1_1x1.bn", "conv2_kxk.conv", "conv3_1x1.conv", 2, revive=True),
    "DistilBERT": _all(_mlp("transformer.layer.0.ffn.lin1", "transformer.layer.0.ffn.lin2"),
                       _split_heads("transformer.layer.0.attention", "q_lin", "k_lin", "v_lin", "out_lin", 4)),
    "GPT-2": _all(_mlp("h.0.mlp.c_fc", "h.0.mlp.c_proj", conv1d=True), _packed_heads("h.0.attn", "c_attn", "c_proj", 4)),
    # GPT-NeoX packs q, k, v per head and rotates a quarter of each (raise.attention.heads_packed_partial_rope_masked)
    "GPT-NeoX": _all(_mlp("layers.0.mlp.dense_h_to_4h", "layers.0.mlp.dense_4h_to_h"),
                     _interleaved_heads("layers.0.attention", "query_key_value", "dense", 4)),
    # OPT scales the query projection before splitting heads (raise.attention.slice_scaled)
    "OPT": _all(_mlp("decoder.layers.0.fc1", "decoder.layers.0.fc2"),
                _split_heads("decoder.layers.0.self_attn", "q_proj", "k_proj", "v_proj", "out_proj", 4)),
    # Phi rotates the first half of each head (raise.attention.heads_partial_rope_masked)
    "Phi": _all(_mlp("layers.0.mlp.fc1", "layers.0.mlp.fc2"),
                _split_heads("layers.0.self_attn", "q_proj", "k_proj", "v_proj", "dense", 4)),
    # Whisper: a zero conv1 filter before the zero-padded conv2 (channels.conv1d.fold_zero), an MLP unit, a head
    "Whisper encoder": _all(_conv_filter("conv1", "conv2"), _mlp("layers.0.fc1", "layers.0.fc2"),
                            _split_heads("layers.0.self_attn", "q_proj", "k_proj", "v_proj", "out_proj", 4)),
    "ViT": _mlp("layers.0.mlp.fc1", "layers.0.mlp.fc2"),
    "TransformerEncoder": _mlp("layers.0.linear1", "layers.0.linear2"),
    "MultiheadAttention": _heads("attn.in_proj", "attn.out_proj", 4),
    "LSTM": _recurrent(4),
    "GRU": _recurrent(3),
}

# Attention raised per head (rules/raise/attention.rules, multihead.rules): the lowered program holds one
# scaled_dot_product_attention per head of every layer, layers x heads, which the dead-head plants rely on.
RAISED_HEADS: dict[str, int] = {
    **{name: 2 * 4 for name in ("BERT", "DistilBERT", "GPT-2", "GPT-NeoX", "OPT", "Phi", "T5 encoder", "Llama",
                                "Mistral", "Qwen2", "Whisper encoder", "ViT", "TransformerEncoder")},
    "MultiheadAttention": 4,
}
