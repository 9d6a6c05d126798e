"""Extension by rule file only: examples/rules_ext adds an activation and a layer type with their
channel rules; loading and proving them needs no Python change."""
import json
import shutil
from pathlib import Path

from sr_ir.cli.main import main
from sr_ir.lang.loader import load_rules

EXT = Path(__file__).resolve().parents[2] / "examples" / "rules_ext"


def test_extension_directory_loads_and_proves(tmp_path, capsys):
    bundled = load_rules()
    assert "mish" not in bundled.ops and "channel_affine" not in bundled.ops
    d = tmp_path / "rules_ext"
    shutil.copytree(EXT, d, ignore=shutil.ignore_patterns("proofs"))
    code = main(["prove", str(d), "--rules", str(d), "--json", "--no-condition-check"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    got = {r["rule"]: (r["status"], r["tier"]) for r in out["results"]}
    assert set(got) == {"mish.const", "mish.zero", "mish.drop_channel", "mish.zero_maps", "mish.drop_channel_maps",
                        "channel_affine.dead", "channel_affine.const", "channel_affine.drop_channel"}
    assert all(v == ("proved", "parametric") for v in got.values()), got
    assert len(list((d / "proofs").glob("*.json"))) == 8
    # the engine sees the new ops and rules through the same loader
    rs = load_rules(extra=[d])
    assert rs.ops["channel_affine"].torch and rs.rule("channel_affine.dead").kind == "forward"


def test_checked_in_extension_certificates_are_current(capsys):
    assert main(["prove", str(EXT), "--rules", str(EXT), "--check"]) == 0


def test_the_feature_map_rules_remove_a_channel_of_a_cnn():
    """conv -> mish -> conv with a dead filter (weights and bias 0): mish(0) = 0 on channel axis 1, so
    both convs lose it, through the directory's `_maps` rules."""
    import torch
    from torch import nn

    import sr_ir

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Mish(), nn.Conv2d(6, 4, 3, padding=1)).double().eval()
    with torch.no_grad():
        m[0].weight[2] = 0
        m[0].bias[2] = 0
    r = sr_ir.minimize(m, (torch.randn(2, 3, 8, 8, dtype=torch.float64),), rules=str(EXT))
    assert r.program.params["0.weight"].shape[0] == 5 and r.program.params["2.weight"].shape[1] == 5
    assert {"mish.zero_maps", "mish.drop_channel_maps"} <= set(r.report.rules_used)
    assert r.report.verification["float64"]["max_rel"] <= 1e-12
