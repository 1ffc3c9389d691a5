"""pytorch/examples' MNIST VAE (vae/main.py), its model, loss and training loop unchanged,
reading MNIST through minivae.datasets.load_mnist (torchvision is not installed here).

    python docs/pytorch_vae.py --epochs 3 --seed 1

Prints one line per epoch: the average training loss (per image, as main.py prints it)
and the test-set loss. The minivae version beside it: docs/minivae_vae.py; both in
docs/pytorch.md.
"""

import argparse
import sys

import numpy as np

from minivae.datasets import DataError, load_mnist


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(prog="pytorch_vae.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="epochs to train (default 3)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--seed", type=int, default=1, help="torch.manual_seed (default 1, as main.py)")
    p.add_argument("--limit", type=int, help="use only the first N training and test images")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be at least 1, got {args.limit}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    import torch.utils.data
    from torch import nn, optim
    from torch.nn import functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    (x_train, _), (x_test, _) = load_mnist()
    # transforms.ToTensor(): uint8 -> float32 in [0, 1]
    x_train = torch.from_numpy(x_train[: args.limit].astype(np.float32) / 255)
    x_test = torch.from_numpy(x_test[: args.limit].astype(np.float32) / 255)
    train_loader = torch.utils.data.DataLoader(x_train, batch_size=args.batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(x_test, batch_size=args.batch_size, shuffle=False)

    class VAE(nn.Module):  # main.py's, line for line
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 400)
            self.fc21 = nn.Linear(400, 20)
            self.fc22 = nn.Linear(400, 20)
            self.fc3 = nn.Linear(20, 400)
            self.fc4 = nn.Linear(400, 784)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = torch.exp(0.5 * logvar)
            eps = torch.randn_like(std)
            return mu + eps * std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return torch.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, 784))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    def loss_function(recon_x, x, mu, logvar):  # summed over pixels, latents and the batch
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
        KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return BCE + KLD

    model = VAE()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    history = {"loss": [], "val_loss": []}
    for epoch in range(1, args.epochs + 1):
        model.train()
        train_loss = 0.0
        for data in train_loader:
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for data in test_loader:
                recon_batch, mu, logvar = model(data)
                test_loss += loss_function(recon_batch, data, mu, logvar).item()
        history["loss"].append(train_loss / len(x_train))
        history["val_loss"].append(test_loss / len(x_test))
        print(
            f"====> Epoch: {epoch} Average loss: {history['loss'][-1]:.4f}  "
            f"Test set loss: {history['val_loss'][-1]:.4f}",
            flush=True,
        )
    return history


if __name__ == "__main__":
    try:
        main()
    except (DataError, ValueError) as e:  # one line, no traceback
        sys.exit(f"pytorch_vae.py: error: {' '.join(str(e).split())}")
