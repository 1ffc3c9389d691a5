"""Module: parameters found by themselves, train/eval, summary() against the lecture's
tables, and weights saved atomically and loaded with every name and shape checked."""

import os
import re

import numpy as np
import pytest

from minivae import Tensor, nn
from minivae.nn import module as module_file


def cnn_encoder():
    return nn.Sequential(
        [
            nn.Conv2D(16, 5, activation="relu"),
            nn.MaxPool2D(2),
            nn.Conv2D(8, 5, activation="relu"),
            nn.Flatten(),
            nn.Dense(64, activation="relu"),
            nn.Dense(2),
        ]
    )


def cnn_decoder():
    return nn.Sequential(
        [
            nn.Dense(64, activation="relu"),
            nn.Dense(512, activation="relu"),
            nn.Reshape((8, 8, 8)),
            nn.Conv2DTranspose(16, 5, activation="relu"),
            nn.UpSampling2D((2, 2)),
            nn.Conv2DTranspose(1, 5, activation="sigmoid"),
        ]
    )


def frey_decoder():
    return nn.Sequential(
        [nn.Dense(200, activation="relu"), nn.Dense(28 * 20 * 2), nn.Reshape((28, 20, 2))]
    )


def frey_encoder():
    return nn.Sequential([nn.Flatten(), nn.Dense(200, activation="relu"), nn.Dense(4)])


def summary_rows(model, input_shape):
    """summary()'s table as (type, output shape, count) rows, and its total line."""
    lines = []
    model.summary(input_shape, print_fn=lines.append)
    table = [
        line
        for line in lines
        if re.match(r"\S+ \(\w+\)\s", line) and not line.startswith("Layer (type)")
    ]
    rows = [re.split(r"\s{2,}", line) for line in table]
    return [
        (re.search(r"\((\w+)\)", name).group(1), shape, count) for name, shape, count in rows
    ], lines[-1]


# The lecture's model.summary() tables, row by row (its Frey models are functional Models
# whose unstack/split/sigmoid rows are ops, not layers, here).
LECTURE_TABLES = {
    "cnn_encoder": (
        cnn_encoder,
        (28, 28, 1),
        [
            ("Conv2D", "(None, 24, 24, 16)", "416"),
            ("MaxPool2D", "(None, 12, 12, 16)", "0"),
            ("Conv2D", "(None, 8, 8, 8)", "3,208"),
            ("Flatten", "(None, 512)", "0"),
            ("Dense", "(None, 64)", "32,832"),
            ("Dense", "(None, 2)", "130"),
        ],
        "36,586",
    ),
    "cnn_decoder": (
        cnn_decoder,
        (2,),
        [
            ("Dense", "(None, 64)", "192"),
            ("Dense", "(None, 512)", "33,280"),
            ("Reshape", "(None, 8, 8, 8)", "0"),
            ("Conv2DTranspose", "(None, 12, 12, 16)", "3,216"),
            ("UpSampling2D", "(None, 24, 24, 16)", "0"),
            ("Conv2DTranspose", "(None, 28, 28, 1)", "401"),
        ],
        "37,089",
    ),
    "frey_decoder": (
        frey_decoder,
        (2,),
        [
            ("Dense", "(None, 200)", "600"),
            ("Dense", "(None, 1120)", "225,120"),
            ("Reshape", "(None, 28, 20, 2)", "0"),
        ],
        "225,720",
    ),
    "frey_encoder": (
        frey_encoder,
        (28, 20),
        [
            ("Flatten", "(None, 560)", "0"),
            ("Dense", "(None, 200)", "112,200"),
            ("Dense", "(None, 4)", "804"),
        ],
        "113,004",
    ),
}


@pytest.mark.parametrize("name", LECTURE_TABLES)
def test_summary_reproduces_the_lectures_tables(name):
    make, input_shape, expected_rows, total = LECTURE_TABLES[name]
    model = make()
    rows, last = summary_rows(model, input_shape)
    assert rows == expected_rows
    assert last == f"Total params: {total}"
    assert f"{model.count_params():,}" == total


def test_cnn_decoder_output_shape():
    assert cnn_decoder().build((2,)) == (28, 28, 1)


def test_summary_lists_the_layers_inside_a_custom_model():
    class Autoencoder(nn.Module):
        def __init__(self):
            self.encoder, self.decoder = cnn_encoder(), cnn_decoder()

        def forward(self, x):
            return self.decoder(self.encoder(x))

    lines = []
    Autoencoder().summary((28, 28, 1), print_fn=lines.append)
    assert lines[0] == 'Model: "Autoencoder"'
    assert any(line.startswith("encoder.layers.0 (Conv2D)") for line in lines)
    assert any(
        line.startswith("decoder.layers.5 (Conv2DTranspose)") and "(None, 28, 28, 1)" in line
        for line in lines
    )
    assert lines[-1] == "Total params: 73,675"  # 36,586 + 37,089


# --- parameters -----------------------------------------------------------------------------


class Mixed(nn.Module):
    """Parameters in every place a Module looks: a layer, a list of layers, a Tensor, a list of
    Tensors."""

    def __init__(self):
        self.body = nn.Sequential([nn.Dense(3), nn.Dense(2)])
        self.heads = [nn.Dense(1), nn.Dense(4)]
        self.scale = Tensor(np.ones(2), requires_grad=True, dtype="float32")
        self.offsets = [
            Tensor(np.zeros(2), requires_grad=True, dtype="float32"),
            Tensor(np.zeros(1), dtype="float32"),
        ]  # the 2nd is no parameter
        self.constant = Tensor(np.ones(5), dtype="float32")  # needs no gradient: not a parameter
        self.note = "not a module"

    def forward(self, x):
        h = self.body(x) * self.scale
        return [head(h) for head in self.heads]


def test_parameters_are_found_by_attribute_with_stable_dotted_names():
    model = Mixed()
    model.build((5,))
    names = [name for name, _ in model.named_parameters()]
    assert names == [
        "body.layers.0.kernel",
        "body.layers.0.bias",
        "body.layers.1.kernel",
        "body.layers.1.bias",
        "heads.0.kernel",
        "heads.0.bias",
        "heads.1.kernel",
        "heads.1.bias",
        "scale",
        "offsets.0",
    ]
    assert model.count_params() == (5 * 3 + 3) + (3 * 2 + 2) + (2 + 1) + (2 * 4 + 4) + 2 + 2
    assert model.parameters()[-1] is model.offsets[0]


def test_train_and_eval_reach_every_layer():
    model = Mixed()
    layers = [m for _, m in model.named_modules()]
    assert len(layers) == 6  # Mixed, the Sequential, its 2 Dense, the 2 heads
    assert all(m.training for m in layers)
    assert model.eval() is model and not any(m.training for m in layers)
    model.train()
    assert all(m.training for m in layers)


# --- saving and loading -----------------------------------------------------------------------


def test_save_and_load_round_trip_exactly(tmp_path):
    model = cnn_encoder()
    model.build((28, 28, 1))
    path = tmp_path / "w.npz"
    model.save_weights(path)
    fresh = cnn_encoder()
    fresh.build((28, 28, 1))
    fresh.load_weights(path)
    for (name, a), (name2, b) in zip(model.named_parameters(), fresh.named_parameters()):
        assert name == name2 and a.dtype == b.dtype
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert os.listdir(tmp_path) == ["w.npz"]  # no temporary file left behind


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    model = nn.Dense(3)
    model.build((2,))
    path = tmp_path / "w.npz"
    model.save_weights(path)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(module_file.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save_weights(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.npz"]


@pytest.mark.parametrize(
    "other, message",
    [
        (
            lambda: nn.Sequential([nn.Dense(4), nn.Dense(2)]),
            r"weight 'layers.0.kernel' has shape \(3, 4\) in the file, \(3, 5\) in the model",
        ),
        (
            lambda: nn.Sequential([nn.Dense(5)]),
            r"the file has no weight 'layers.1.kernel' \(expected shape \(5, 2\)\)",
        ),
        (
            lambda: nn.Sequential([nn.Dense(5), nn.Dense(2), nn.Dense(1)]),
            r"the file has weights the model lacks, first 'layers.2.bias'",
        ),
    ],
    ids=["shape", "missing", "extra"],
)
def test_loading_another_architecture_names_the_mismatch_and_changes_nothing(
    tmp_path, other, message
):
    source = other()
    source.build((3,))
    source.save_weights(tmp_path / "other.npz")
    model = nn.Sequential([nn.Dense(5), nn.Dense(2)])
    model.build((3,))
    before = model.state_dict()
    with pytest.raises(ValueError, match=message):
        model.load_weights(tmp_path / "other.npz")
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_loading_into_an_unbuilt_model_says_to_build_it(tmp_path):
    model = nn.Dense(2)
    model.build((3,))
    model.save_weights(tmp_path / "w.npz")
    with pytest.raises(ValueError, match=r"has no weights yet; build it first"):
        nn.Dense(2).load_weights(tmp_path / "w.npz")


def test_state_dict_is_a_snapshot():
    model = nn.Dense(2)
    model.build((3,))
    snapshot = model.state_dict()
    kept = snapshot["kernel"].copy()
    model.kernel.data = model.kernel.data * 0 + 7  # what an optimiser step does: a new array
    model.load_state_dict(snapshot)
    snapshot["kernel"][...] = -1  # the model owns a copy, not the dict's array
    np.testing.assert_array_equal(model.kernel.numpy(), kept)
