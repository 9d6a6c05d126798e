"""Plant known removable structure in transformer models and know, by construction, the minimal size.

`plant(model)` writes exact zeros (and constants) into a model of `sr_ir.models.transformers`:

- dead attention heads: the output projection's columns of a query head are zero (with grouped-query
  attention a whole group can die, which frees its key/value head too);
- constant value dims: a row of the value projection is zero, so the value channel holds its bias (or 0);
- removable query/key dims: a query row and its bias are zero (score term 0), or a key row is zero so the key
  channel is a constant (the score term is then the same for every key: softmax shift invariance); with
  RoPE the key rows of a whole rotation pair are zero;
- dead MLP units: an up-projection row is zero (the unit holds act(bias), folded into the down bias);
- residual-stream channels: every writer writes a constant (embedding columns constant, output projection
  and MLP down rows zero) and every norm has gamma = 0 on the channel, so every reader absorbs it;
- random unstructured sparsity elsewhere, redrawn where it would create structure by accident.

`Plan.minimal_param_count()` is the number of trainable parameters of the smallest exact model: what an
exact minimizer must reach, no more and no less. Folded constants go into existing biases (none of the
planted constants needs a bias where the layer has none, so no parameter is created).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.transformers import GPTDecoder, LlamaDecoder, PostLNEncoder, PreLNEncoder, RMSNorm, TransformerConfig


@dataclass
class Plan:
    """What was planted, per layer, and what it leaves."""

    family: str
    cfg: TransformerConfig
    residual: list[int] = field(default_factory=list)  # removed stream channels
    dead_heads: dict[int, list[int]] = field(default_factory=dict)  # layer -> dead query heads
    v_dims: dict[int, dict[int, list[int]]] = field(default_factory=dict)  # layer -> kv head -> value dims
    qk_dims: dict[int, dict[int, list[int]]] = field(default_factory=dict)  # layer -> kv head -> qk dims
    mlp_units: dict[int, list[int]] = field(default_factory=dict)
    sparsity: float = 0.0
    seq_len: int = 0  # the sequence length the model is lowered at (position tables are sliced to it)

    # ---- the minimal model's widths ------------------------------------------------------------
    def group(self, h: int) -> int:
        return h // (self.cfg.n_heads // self.cfg.kv_heads)

    def alive_heads(self, layer: int) -> list[int]:
        dead = set(self.dead_heads.get(layer, []))
        return [h for h in range(self.cfg.n_heads) if h not in dead]

    def alive_kv(self, layer: int) -> list[int]:
        return sorted({self.group(h) for h in self.alive_heads(layer)})

    def qk_width(self, layer: int, g: int) -> int:
        return self.cfg.hd - len(self.qk_dims.get(layer, {}).get(g, []))

    def v_width(self, layer: int, g: int) -> int:
        return self.cfg.hd - len(self.v_dims.get(layer, {}).get(g, []))

    def components(self) -> dict[str, tuple[int, int]]:
        """Parameters (original, minimal) per component: embeddings, norms, attention q/k, v/o, MLP, head."""
        c, fam = self.cfg, self.family
        d, dk = c.d_model, c.d_model - len(self.residual)
        bias = fam != "llama"
        out: dict[str, list[int]] = {k: [0, 0] for k in ("embeddings", "norms", "attn_qk", "attn_vo", "mlp", "head")}

        def add(key: str, full: int, kept: int) -> None:
            out[key][0] += full
            out[key][1] += kept

        seq = self.seq_len or c.max_len
        add("embeddings", c.vocab * d, c.vocab * dk)
        if fam != "llama":
            add("embeddings", seq * d, seq * dk)
        n_norm_params = 1 if fam == "llama" else 2
        norms = {"pre_ln": 2 * c.n_layers + 1, "post_ln": 2 * c.n_layers + 1, "gpt": 2 * c.n_layers + 1,
                 "llama": 2 * c.n_layers + 1}[fam]
        add("norms", norms * n_norm_params * d, norms * n_norm_params * dk)
        for layer in range(c.n_layers):
            heads, kv = self.alive_heads(layer), self.alive_kv(layer)
            q_rows = sum(self.qk_width(layer, self.group(h)) for h in heads)
            k_rows = sum(self.qk_width(layer, g) for g in kv)
            v_rows = sum(self.v_width(layer, g) for g in kv)
            o_cols = sum(self.v_width(layer, self.group(h)) for h in heads)
            full_q, full_kv = c.n_heads * c.hd, c.kv_heads * c.hd
            add("attn_qk", (full_q + full_kv) * (d + bias), (q_rows + k_rows) * (dk + bias))
            add("attn_vo", full_kv * (d + bias) + d * full_q + d * bias, v_rows * (dk + bias) + dk * o_cols + dk * bias)
            hidden = c.d_ff - len(self.mlp_units.get(layer, []))
            if fam == "llama":
                add("mlp", 3 * c.d_ff * d, 3 * hidden * dk)
            else:
                add("mlp", c.d_ff * (d + 1) + d * (c.d_ff + 1), hidden * (dk + 1) + dk * (hidden + 1))
        if fam in ("pre_ln", "post_ln"):
            add("head", c.n_classes * (d + 1), c.n_classes * (dk + 1))
        elif fam == "llama":
            add("head", c.vocab * d, c.vocab * dk)
        return {k: (v[0], v[1]) for k, v in out.items()}

    def original_param_count(self) -> int:
        return sum(v[0] for v in self.components().values())

    def minimal_param_count(self) -> int:
        return sum(v[1] for v in self.components().values())


def _family(model: nn.Module) -> str:
    for cls, name in ((PreLNEncoder, "pre_ln"), (PostLNEncoder, "post_ln"), (GPTDecoder, "gpt"), (LlamaDecoder, "llama")):
        if isinstance(model, cls):
            return name
    raise TypeError(f"planting supports the sr_ir.models.transformers families, not {type(model).__name__}")


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.LayerNorm, RMSNorm))]


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@torch.no_grad()
def plant(
    model: nn.Module,
    *,
    seed: int = 0,
    dead_heads: int = 1,
    v_dims: int = 2,
    qk_dims: int = 2,
    mlp_units: int = 4,
    residual: int = 3,
    sparsity: float = 0.3,
    kill_kv_group: bool = True,
    seq_len: int | None = None,
) -> Plan:
    """Plant structure in `model` (in place) and return the Plan. Counts are per layer (residual: total).

    With grouped-query attention and `kill_kv_group`, layer 0 loses a whole group of query heads (so its
    key/value head goes too); other layers lose `dead_heads` single query heads. qk dims are planted on
    alive heads: with RoPE as whole rotation pairs of a key/value head (`qk_dims` rounded down to even).
    """
    fam = _family(model)
    cfg: TransformerConfig = model.cfg
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    plan = Plan(fam, cfg, sparsity=sparsity, seq_len=seq_len or cfg.max_len)
    hd, rep = cfg.hd, cfg.n_heads // cfg.kv_heads
    rope = fam == "llama"

    # 1. random unstructured sparsity first, so that planted structure is exact on top of it
    if sparsity > 0:
        for lin in _linears(model):
            _sparsify(lin.weight, sparsity, gen)
        _sparsify(model.tok.weight, sparsity, gen)

    structured: dict[nn.Linear, tuple[set[int], set[int]]] = {}  # planted (rows, cols) per linear

    def mark(lin: nn.Linear, rows=(), cols=()) -> None:
        r, c = structured.setdefault(lin, (set(), set()))
        r.update(rows)
        c.update(cols)

    for layer, blk in enumerate(model.blocks):
        att = blk.attn
        # dead heads
        if rope and kill_kv_group and layer == 0 and cfg.kv_heads > 1:
            g = rng.randrange(cfg.kv_heads)
            dead = list(range(g * rep, (g + 1) * rep))
        else:
            dead = sorted(rng.sample(range(cfg.n_heads), min(dead_heads, cfg.n_heads - 1)))
        plan.dead_heads[layer] = dead
        for h in dead:
            cols = range(h * hd, (h + 1) * hd)
            att.o_proj.weight[:, list(cols)] = 0.0
            mark(att.o_proj, cols=cols)
        alive_kv = plan.alive_kv(layer)
        # constant value dims (per key/value head, on alive ones)
        plan.v_dims[layer] = {}
        plan.qk_dims[layer] = {}
        for g in alive_kv:
            ds = sorted(rng.sample(range(hd), v_dims))
            plan.v_dims[layer][g] = ds
            rows = [g * hd + d for d in ds]
            att.v_proj.weight[rows, :] = 0.0
            mark(att.v_proj, rows=rows)
            # query/key dims
            if rope:
                pairs = sorted(rng.sample(range(hd // 2), qk_dims // 2))
                dims = sorted(pairs + [p + hd // 2 for p in pairs])
                rows = [g * hd + d for d in dims]
                att.k_proj.weight[rows, :] = 0.0  # zero key pair: the rotated pair is zero too
                mark(att.k_proj, rows=rows)
            else:
                dims = sorted(rng.sample(range(hd), qk_dims))
                for i, d in enumerate(dims):
                    if i % 2 == 0:  # zero query channel (all query heads of the group)
                        rows = [h * hd + d for h in range(g * rep, (g + 1) * rep)]
                        att.q_proj.weight[rows, :] = 0.0
                        if att.q_proj.bias is not None:
                            att.q_proj.bias[rows] = 0.0
                        mark(att.q_proj, rows=rows)
                    else:  # constant key channel (its bias): shift invariance of softmax
                        att.k_proj.weight[g * hd + d, :] = 0.0
                        mark(att.k_proj, rows=[g * hd + d])
            plan.qk_dims[layer][g] = dims
        # dead MLP units
        units = sorted(rng.sample(range(cfg.d_ff), mlp_units))
        plan.mlp_units[layer] = units
        up = blk.mlp.gate_proj if rope else blk.mlp.fc1
        up.weight[units, :] = 0.0
        mark(up, rows=units)

    # residual-stream channels
    chans = sorted(rng.sample(range(cfg.d_model), residual))
    plan.residual = chans
    tied = fam == "gpt"
    for c in chans:
        # a tied embedding is also the output projection: its column must be 0 so the head reads nothing
        model.tok.weight[:, c] = 0.0 if tied else float(torch.randn((), generator=gen))
        if hasattr(model, "pos"):
            model.pos.weight[:, c] = float(torch.randn((), generator=gen))
    for blk in model.blocks:
        att_o = blk.attn.o_proj
        down = blk.mlp.down_proj if rope else blk.mlp.fc2
        att_o.weight[chans, :] = 0.0
        down.weight[chans, :] = 0.0
        mark(att_o, rows=chans)
        mark(down, rows=chans)
    for norm in _norms(model):
        norm.weight[chans] = 0.0
    # 2. no accidental structure: every unplanted row/column of every linear keeps a nonzero
    for lin in _linears(model):
        rows, cols = structured.get(lin, (set(), set()))
        _ensure_live(lin.weight, rows, cols, gen)
    _ensure_live(model.tok.weight, set(), set(chans), gen)
    return plan


def _sparsify(w: torch.Tensor, p: float, gen: torch.Generator) -> None:
    keep = torch.rand(w.shape, generator=gen) >= p
    w.mul_(keep.to(w.dtype))


def _ensure_live(w: torch.Tensor, rows: set[int], cols: set[int], gen: torch.Generator) -> None:
    """Give a nonzero to every row not in `rows` and column not in `cols` that is entirely zero outside
    the planted rows/columns (vectorized check; the repair touches only the rare empty lines)."""
    live = w.clone()
    if rows:
        live[list(rows), :] = 0
    if cols:
        live[:, list(cols)] = 0
    free_rows = [i for i in range(w.shape[0]) if i not in rows]
    free_cols = [j for j in range(w.shape[1]) if j not in cols]
    if not free_rows or not free_cols:
        return
    dead_r = [i for i in torch.nonzero(live.abs().sum(1) == 0).flatten().tolist() if i not in rows]
    for i in dead_r:
        w[i, free_cols[int(torch.randint(len(free_cols), (1,), generator=gen))]] = 0.5
    live = w.clone()
    if rows:
        live[list(rows), :] = 0
    dead_c = [j for j in torch.nonzero(live.abs().sum(0) == 0).flatten().tolist() if j not in cols]
    for j in dead_c:
        w[free_rows[int(torch.randint(len(free_rows), (1,), generator=gen))], j] = 0.5


def trainable_param_count(module: nn.Module) -> int:
    """Trainable parameters, each shared tensor once (tied embeddings count once)."""
    return sum(p.numel() for p in module.parameters())


# ---- ConvNeXt ---------------------------------------------------------------------------------------
@dataclass
class ConvNeXtPlan:
    """Planted structure of a ConvNeXt (sr_ir.models.convnext): removed stream channels per stage and dead
    MLP units per block, with the known minimal parameter count."""

    dims: list[int]
    depths: list[int]
    in_chans: int
    num_classes: int
    stem: int
    residual: dict[int, list[int]] = field(default_factory=dict)  # stage -> stream channels
    mlp_units: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (stage, block) -> units

    def _count(self, kept: list[int], hidden: dict[tuple[int, int], int]) -> int:
        k0 = kept[0]
        total = k0 * self.in_chans * self.stem * self.stem + k0 + 2 * k0  # stem conv + LayerNorm
        for s, depth in enumerate(self.depths):
            k = kept[s]
            for b in range(depth):
                h = hidden[(s, b)]
                total += k * 49 + k + 2 * k + h * k + h + k * h + k + k  # dw, LN, pw1, pw2, layer scale
            if s < 3:
                total += 2 * k + kept[s + 1] * k * 4 + kept[s + 1]  # downsample LN + 2x2 conv
        return total + 2 * kept[3] + self.num_classes * kept[3] + self.num_classes

    def original_param_count(self) -> int:
        return self._count(list(self.dims), {(s, b): 4 * self.dims[s] for s, d in enumerate(self.depths) for b in range(d)})

    def minimal_param_count(self) -> int:
        kept = [d - len(self.residual.get(s, [])) for s, d in enumerate(self.dims)]
        hidden = {(s, b): 4 * self.dims[s] - len(self.mlp_units.get((s, b), []))
                  for s, d in enumerate(self.depths) for b in range(d)}
        return self._count(kept, hidden)


@torch.no_grad()
def plant_convnext(model: nn.Module, *, seed: int = 0, residual: int = 2, mlp_units: int = 4,
                   sparsity: float = 0.3) -> ConvNeXtPlan:
    """Plant removable stream channels (per stage) and dead MLP units (per block) in a ConvNeXt.

    A stream channel is read by the blocks' 7x7 depthwise convs with zero padding, so it must hold exactly
    0 (minimization.md section 1): its writer writes 0 (stage 0: stem filter zero, stem LayerNorm gamma and
    beta 0; later stages: downsample filter and bias zero), every block adds 0 (pointwise-2 row and layer
    scale zero), and its readers absorb it: block LayerNorms (input = the depthwise bias, compensated;
    gamma 0 so the output is beta, folded into pointwise-1), the stage-end LayerNorm (compensated, gamma 0,
    beta folded into the unpadded 2x2 conv or the head).
    """
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    stem = model.downsample_layers[0][0]
    dims = [st[0].dwconv.weight.shape[0] for st in model.stages]
    plan = ConvNeXtPlan(dims, [len(st) for st in model.stages], stem.weight.shape[1], model.head.weight.shape[0],
                        stem.kernel_size[0])
    if sparsity > 0:
        dense = [m for m in model.modules() if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)]
        for m in dense:
            _sparsify(m.weight, sparsity, gen)
        for m in dense:  # keep every filter / column alive: only planted structure may be removable
                w = m.weight.reshape(m.weight.shape[0], m.weight.shape[1], -1)
                dead_rows = torch.nonzero((w == 0).all(dim=2).all(dim=1)).flatten().tolist()
                for i in dead_rows:
                    m.weight.view(m.weight.shape[0], -1)[i, 0] = 0.5
                dead_cols = torch.nonzero((w == 0).all(dim=2).all(dim=0)).flatten().tolist()
                for j in dead_cols:
                    w[0, j, 0] = 0.5
    for s, stage in enumerate(model.stages):
        chans = sorted(rng.sample(range(dims[s]), residual))
        plan.residual[s] = chans
        if s == 0:
            stem.weight[chans] = 0.0
            ln = model.downsample_layers[0][1]
            ln.weight[chans] = 0.0
            ln.bias[chans] = 0.0
        else:
            conv = model.downsample_layers[s][1]
            conv.weight[chans] = 0.0
            conv.bias[chans] = 0.0
        for b, blk in enumerate(stage):
            blk.pwconv2.weight[chans] = 0.0
            blk.gamma[chans] = 0.0
            blk.norm.weight[chans] = 0.0
            units = sorted(rng.sample(range(4 * dims[s]), mlp_units))
            plan.mlp_units[(s, b)] = units
            blk.pwconv1.weight[units] = 0.0
        end_norm = model.downsample_layers[s + 1][0] if s < 3 else model.norm
        end_norm.weight[chans] = 0.0
    return plan
