"""Each bundled rule's certificate reaches the tier pinned here (read from the certificates, so the
test is fast; `sr-ir prove --check` makes sure they are current). A rule that falls to a lower tier,
a new rule, or a rule that is gone must show up here and be explained, not absorbed.
"""
import json

from sr_ir.lang.loader import load_rules
from sr_ir.prover.certificates import certificate_status

# `channels.conv2d.unused_col` stays bounded: the channel indexes x's channel axis (c) and weight's
# input axis (cg), tied only by the op constraint c == cg * groups, and the parametric tier keeps
# one channel axis. Every other rule is proved for all sizes.
TIERS = {
    "add.const": "parametric",
    "sub.const": "parametric",
    "add.unused": "parametric",
    "add.channel_bias_const": "parametric",
    "mul.zero_scale": "parametric",
    "mul.const_scale": "parametric",
    "mul.unused_by_zero_scale": "parametric",
    "attention.const_value_dim": "parametric",
    "attention.zero_query_dim": "parametric",
    "attention.zero_key_dim": "parametric",
    "attention.const_key_dim": "parametric",
    "attention.unused_value_dim": "parametric",
    "attention.drop_value_dim": "parametric",
    "attention.unused_head": "parametric",
    "batch_norm.const": "parametric",
    "batch_norm.fold_linear": "parametric",
    "channels.linear.dead_row": "parametric",
    "channels.linear.dead_row_nobias": "parametric",
    "channels.linear.unused_col": "parametric",
    "channels.linear.unused_col_nobias": "parametric",
    "channels.linear.fold_const": "parametric",
    "channels.linear.fold_const_nobias": "parametric",
    "channels.linear.drop_row": "parametric",
    "channels.linear.drop_row_nobias": "parametric",
    "channels.conv2d.dead_row": "parametric",
    "channels.conv2d.unused_col": "bounded",
    "channels.conv2d.fold_const": "parametric",
    "channels.conv2d.fold_zero": "parametric",
    "channels.conv2d.drop_row": "parametric",
    "channels.conv2d.drop_depthwise": "parametric",
    "channels.relu.drop_channel": "parametric",
    "channels.gelu.drop_channel": "parametric",
    "channels.silu.drop_channel": "parametric",
    "channels.tanh.drop_channel": "parametric",
    "channels.sigmoid.drop_channel": "parametric",
    "channels.add.drop_channel": "parametric",
    "channels.sub.drop_channel": "parametric",
    "channels.mul.drop_channel": "parametric",
    "channels.batch_norm.drop_channel": "parametric",
    "channels.max_pool2d.drop_channel": "parametric",
    "channels.avg_pool2d.drop_channel": "parametric",
    "channels.adaptive_avg_pool2d.drop_channel": "parametric",
    "channels.mean.drop_channel": "parametric",
    "channels.mean.drop_channel_neg": "parametric",
    "channels.permute.drop_channel": "parametric",
    "channels.permute.drop_channel_back": "parametric",
    "channels.reshape.flatten": "parametric",
    "channels.reshape.flatten1d": "parametric",
    "channels.reshape.unflatten": "parametric",
    "channels.reshape.merge_leading": "parametric",
    "channels.reshape.split_leading": "parametric",
    "channels.concat.drop_channel": "parametric",
    "channels.concat.drop_channel_maps": "parametric",
    "channels.concat.drop_channel_last": "parametric",
    "channels.gather.drop_channel": "parametric",
    "channels.batch_norm.fold_conv2d": "parametric",
    "conv2d.fold_const_1x1": "parametric",
    "conv2d.depthwise_zero": "parametric",
    "conv2d.depthwise_const": "parametric",
    "conv2d.depthwise_dead": "parametric",
    "relu.const": "parametric",
    "relu.zero": "parametric",
    "gelu.const": "parametric",
    "silu.const": "parametric",
    "tanh.const": "parametric",
    "sigmoid.const": "parametric",
    "relu.unused": "parametric",
    "gelu.unused": "parametric",
    "silu.unused": "parametric",
    "embedding.const_column": "parametric",
    "input.gather_unused": "parametric",
    "layer_norm.zero_gamma": "parametric",
    "layer_norm.compensate": "parametric",
    "compensated_layer_norm.compose": "parametric",
    "compensated_layer_norm.zero_gamma": "parametric",
    "rms_norm.compensate": "parametric",
    "compensated_rms_norm.compose": "parametric",
    "rms_norm.zero_gamma": "parametric",
    "adaptive_avg_pool2d.const": "parametric",
    "avg_pool2d.const_unpadded": "parametric",
    "avg_pool2d.const_exclude_pad": "parametric",
    "max_pool2d.const": "parametric",
}


def test_each_library_rule_reaches_its_pinned_tier():
    rs = load_rules()
    got = {}
    for r in rs.rules:
        st = certificate_status(r, rs)
        assert st.ok, (r.name, st.state, st.reason)
        got[r.name] = json.loads(st.path.read_text())["tier"]
    assert set(got) == set(TIERS), {"new": sorted(set(got) - set(TIERS)), "gone": sorted(set(TIERS) - set(got))}
    lowered = {n: (TIERS[n], t) for n, t in got.items() if t != TIERS[n]}
    assert not lowered, lowered
