"""pytorch/examples' MNIST VAE (vae/main.py) written with minivae: the same model
(784-400-20, ReLU, two encoder heads, Bernoulli pixels), the same summed BCE + KLD loss,
batch 128, Adam with lr 1e-3, and PyTorch's default initialisation.

    python docs/minivae_vae.py --epochs 3 --seed 1

Prints one line per epoch, as docs/pytorch_vae.py does: the average training loss per
image and the test-set loss. Both, side by side: docs/pytorch.md.
"""

import argparse
import sys

import minivae as mv
from minivae.datasets import DataError, load_mnist
from minivae.nn import Dense, Module, Sequential

TORCH_INIT = {"kernel_initializer": "pytorch", "bias_initializer": "pytorch"}  # nn.Linear's


class Encoder(Module):
    """fc1, then the two heads fc21 (mu) and fc22 (log_var)."""

    def __init__(self):
        self.fc1 = Dense(400, "relu", **TORCH_INIT)
        self.fc21 = Dense(20, **TORCH_INIT)
        self.fc22 = Dense(20, **TORCH_INIT)

    def forward(self, x):
        h1 = self.fc1(x.reshape(x.shape[0], 784))
        return self.fc21(h1), self.fc22(h1)


def make_vae():
    # the decoder returns logits: the Bernoulli likelihood applies the sigmoid (stably)
    decoder = Sequential([Dense(400, "relu", **TORCH_INIT), Dense(784, **TORCH_INIT)])
    vae = mv.VAE(Encoder(), decoder, likelihood="bernoulli")
    vae.build((28, 28))  # the weights exist now, so the optimiser sees them
    return vae


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(prog="minivae_vae.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="epochs to train (default 3)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    p.add_argument(
        "--seed", type=int, default=1, help="seed of the weights and every draw (default 1)"
    )
    p.add_argument("--limit", type=int, help="use only the first N training and test images")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be at least 1, got {args.limit}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    (x_train, _), (x_test, _) = load_mnist()  # uint8: fit scales it to [0, 1] on the device
    x_train, x_test = x_train[: args.limit], x_test[: args.limit]
    mv.seed(args.seed)
    vae = make_vae()
    optimizer = mv.Adam(vae.parameters(), lr=1e-3, eps=1e-8)  # PyTorch's eps (minivae's is Keras's)
    history = mv.fit(
        vae,
        lambda x: vae.elbo(x, reduction="sum"),
        optimizer,
        x_train,
        x_test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        reduction="sum",
        verbose=False,
        on_epoch_end=lambda h: print(
            f"====> Epoch: {len(h)} Average loss: {h['loss'][-1]:.4f}  "
            f"Test set loss: {h['val_loss'][-1]:.4f}",
            flush=True,
        ),
    )
    return history.metrics


if __name__ == "__main__":
    try:
        main()
    except (DataError, ValueError) as e:  # one line, no traceback
        sys.exit(f"minivae_vae.py: error: {' '.join(str(e).split())}")
