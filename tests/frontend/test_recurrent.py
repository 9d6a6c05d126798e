"""nn.LSTM / nn.GRU lower to one `lstm` / `gru` node per layer (sr_ir/frontend/handlers.py): stacked
layers and the final hidden state; what is not supported yet fails in one line. A sequence-first layer
(batch_first=False, torch's default) lowers through torch.export, which specializes its shapes: the
program is exact at the example's sizes only."""
import pytest
import torch

import sr_ir
from sr_ir.errors import UnsupportedOpError


class _Tagger(torch.nn.Module):
    def __init__(self, rnn: torch.nn.Module, use: str = "out") -> None:
        super().__init__()
        self.rnn, self.use = rnn, use
        self.head = torch.nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(x)
        if self.use == "h_n":  # the last layer's final hidden state, added at every step
            h = state[0] if isinstance(state, tuple) else state
            return self.head(out) + self.head(h[-1]).unsqueeze(1)
        if self.use == "c_n":
            return self.head(state[1][-1])
        return self.head(out)


def _x(b: int, first: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(b)
    return torch.randn((b, 5, 6) if first else (5, b, 6), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU])
def test_stacked_layers_and_final_state_are_exact_at_another_batch(cls):
    torch.manual_seed(0)
    model = _Tagger(cls(6, 7, num_layers=2, batch_first=True), use="h_n").double().eval()
    program = sr_ir.lower(model, [_x(2)])
    op = cls.__name__.lower()
    assert [n.op for n in program.nodes].count(op) == 2
    assert program.params["rnn.weight_hh_l1"].shape == ((4 if op == "lstm" else 3), 7, 7)  # per-gate rows
    text = program.to_text()
    assert sr_ir.parse(text).to_text() == text
    result = sr_ir.minimize(model, [_x(2)])
    with torch.no_grad():
        torch.testing.assert_close(result.module(_x(3)), model(_x(3)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rnn,use,message", [
    (lambda: torch.nn.LSTM(6, 7, batch_first=True, bidirectional=True), "out", "bidirectional=True"),
    (lambda: torch.nn.LSTM(6, 7, batch_first=True), "c_n", "final cell state c_n"),
])
def test_unsupported_forms_fail_in_one_line(rnn, use, message):
    model = _Tagger(rnn(), use).double().eval()
    with pytest.raises(UnsupportedOpError, match=message) as e:
        sr_ir.lower(model, [_x(2)])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU])
def test_a_sequence_first_layer_lowers_and_minimizes_at_the_examples_sizes(cls):
    torch.manual_seed(0)
    model = _Tagger(cls(6, 7), use="out").double().eval()
    with torch.no_grad():
        model.head.weight[:, 3] = 0  # unit 3 is read by nobody ...
        model.rnn.weight_hh_l0[:, 3] = 0  # ... and by no gate of the next step
    x = _x(2, first=False)
    result = sr_ir.minimize(model, (x,))
    assert [n.op for n in result.program.nodes].count(cls.__name__.lower()) == 1
    assert result.program.inputs[0][1].shape == (5, 2, 6)  # static: torch.export specialized the sizes
    assert result.module.state_dict()["rnn.weight_hh_l0"].shape[1:] == (6, 6)
    assert torch.allclose(result.module(x), model(x), rtol=0, atol=1e-12)
