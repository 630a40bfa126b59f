import pytest
import torch

from lit_grok.model import MLP, PreLNDecoder, Transformer


@pytest.mark.parametrize("n_layers, layer_norm", [(1, False), (2, False), (2, True)])
def test_answer_position_shortcut_equals_full_computation(n_layers, layer_norm):
    torch.manual_seed(0)
    net = Transformer(14, 13, n_layers=n_layers, d_model=32, n_heads=4, d_mlp=64, layer_norm=layer_norm).double()
    tokens = torch.randint(0, 14, (50, 3))
    full = net(tokens, all_positions=True)
    assert full.shape == (50, 3, 13)
    torch.testing.assert_close(net(tokens), full[:, -1], rtol=0, atol=1e-12)


def test_full_computation_is_causal():
    torch.manual_seed(0)
    net = Transformer(14, 13, d_model=32, n_heads=4, d_mlp=64)
    a = torch.tensor([[1, 2, 13]])
    b = torch.tensor([[1, 5, 13]])
    assert torch.allclose(net(a, all_positions=True)[:, 0], net(b, all_positions=True)[:, 0])
    assert not torch.allclose(net(a, all_positions=True)[:, 1], net(b, all_positions=True)[:, 1])


def test_paper_model_size():
    net = Transformer(114, 113)
    counts = {name: p.numel() for name, p in net.named_parameters()}
    assert counts["embed.weight"] == 114 * 128 and counts["unembed.weight"] == 113 * 128
    assert counts["blocks.0.mlp.fc_in.weight"] == 512 * 128
    assert net(torch.zeros(4, 3, dtype=torch.long)).shape == (4, 113)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="d_model \\(30\\) must be divisible by n_heads \\(4\\)"):
        Transformer(8, 7, d_model=30, n_heads=4)


def test_mlp_output_shape():
    assert MLP(12, 11, d_embed=8, hidden=(16, 16))(torch.randint(0, 12, (5, 3))).shape == (5, 11)


def test_grokfast_decoder_has_their_parameters_and_is_causal():
    # Grokfast's main.py at P=97: 99 tokens (97 elements, "=", "op"), 5 positions, 2 blocks of width 128 with
    # torch's attention (biases) and a 4x GELU MLP, a final LayerNorm and a bias-free head over all 99 tokens
    net = PreLNDecoder(99, 97, vocab_head=True)
    block = 2 * 2 * 128 + (3 * 128 * 128 + 3 * 128) + (128 * 128 + 128) + (128 * 512 + 512 + 512 * 128 + 128)
    assert sum(p.numel() for p in net.parameters()) == 99 * 128 + 5 * 128 + 2 * block + 2 * 128 + 128 * 99 == 422_784
    assert net(torch.zeros(3, 4, dtype=torch.long)).shape == (3, 99)
    assert PreLNDecoder(99, 97)(torch.zeros(3, 4, dtype=torch.long)).shape == (3, 97)
    torch.manual_seed(0)
    layer = net.layers[0]
    x = torch.randn(1, 4, 128)
    y = x.clone()
    y[:, 3] += 1.0  # a later position changes
    mask = torch.triu(torch.full((4, 4), float("-inf")), diagonal=1)
    assert torch.allclose(layer(x, mask)[:, :3], layer(y, mask)[:, :3], atol=1e-6)
    assert not torch.allclose(layer(x, mask)[:, 3], layer(y, mask)[:, 3])


def test_one_hot_mlp_is_prieto_et_al_s_network():
    from lit_grok.model import OneHotMLP

    torch.manual_seed(0)
    net = OneHotMLP(114, 113)  # add mod 113: tokens a, b, '=' (114), answers 0..112
    # their MLP: 226 one-hot inputs, hidden [200, 200], no biases: 226*200 + 200*200 + 200*113 parameters
    assert [tuple(p.shape) for p in net.parameters()] == [(200, 226), (200, 200), (113, 200)]
    tokens = torch.tensor([[3, 110, 113], [0, 112, 113]])
    x = torch.zeros(2, 226)
    x[0, 3], x[0, 113 + 110], x[1, 0], x[1, 113 + 112] = 1, 1, 1, 1
    w = [layer.weight for layer in net.layers]
    expected = torch.relu(torch.relu(x @ w[0].T) @ w[1].T) @ w[2].T
    torch.testing.assert_close(net(tokens), expected)
    # the 4-token format a op b =: operands at positions 0 and 2
    assert OneHotMLP(99, 97, operands=(0, 2), hidden=(8,))(torch.tensor([[5, 97, 6, 98]])).shape == (1, 97)
    with pytest.raises(ValueError, match="encodes operand tokens 0..112 .*got 0..113 at positions \\[0, 1\\]"):
        OneHotMLP(114, 113)(torch.tensor([[0, 113, 113]]))
