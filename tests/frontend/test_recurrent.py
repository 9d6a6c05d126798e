"""nn.LSTM / nn.GRU lower to one `lstm` / `gru` node per layer (sr_ir/frontend/handlers.py): stacked
layers and the final hidden state; what is not supported yet fails in one line. (batch_first=False is
lowered with a permute on each side, but torch.export, which makes axis 0 dynamic, then traces the
layer over a symbolic sequence length, which can take minutes: not tested here.)"""
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
