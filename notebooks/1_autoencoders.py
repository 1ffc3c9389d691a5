# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2-3. Autoencoders, and the CNN autoencoder on Fashion-MNIST
#
# The lecture's sections 2 (autoencoders) and 3 (the CNN autoencoder example), in minivae:
# an encoder squeezes a 28 x 28 image through a 2-number bottleneck z, a decoder rebuilds
# the image from z, and the two are trained together to reproduce their input. We look at
# the encodings before and after training and at the reconstructions, then do the
# lecture's exercise (strides instead of pooling) and train the denoising variant.
#
# **Run it small first.** `SMALL = True` (or `MINIVAE_NOTEBOOK_SMALL=1`) trains on 256
# images for one epoch; `SMALL = False` is the lecture's run (60,000 images, 10 epochs,
# about two minutes an epoch per model on a laptop's CPU) and reproduces
# [docs/results.md](../docs/results.md).

# %%
import os

SMALL = os.environ.get("MINIVAE_NOTEBOOK_SMALL", "0") == "1"  # True: a quick run

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

import minivae
from minivae import backend
from minivae import functional as F
from minivae.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist
from minivae.nn import (
    Conv2D,
    Conv2DTranspose,
    Dense,
    Flatten,
    MaxPool2D,
    Reshape,
    Sequential,
    UpSampling2D,
)
from minivae.optim import Adam
from minivae.train import fit, to_device

SEED = 0
EPOCHS = 1 if SMALL else 10
LIMIT = 256 if SMALL else None  # training and test images used (None: all)
IMAGE_SHAPE = (28, 28, 1)  # channels-last, as Keras

# %% [markdown]
# ## The data
#
# Fashion-MNIST: 60,000 training and 10,000 test images of ten kinds of clothing. We keep
# the bytes; `to_device` scales each batch to [0, 1] as it moves it to the backend.

# %%
backend.set_backend("numpy")
(x_train, _), (x_test, y_test) = load_fashion_mnist()
x_train, x_test, y_test = x_train[:LIMIT, ..., None], x_test[:LIMIT, ..., None], y_test[:LIMIT]
print(f"{len(x_train)} training and {len(x_test)} test images")

fig, axes = plt.subplots(1, 10, figsize=(12, 1.6))
for c, ax in enumerate(axes):
    ax.imshow(x_test[np.argmax(y_test == c), ..., 0], cmap="binary")
    ax.set_title(FASHION_MNIST_CLASSES[c], fontsize=8)
    ax.axis("off")
plt.show()


# %% [markdown]
# ## The encoder and the decoder
#
# The lecture's network: two 5 x 5 convolutions with max-pooling between them, then dense
# layers down to z (2 numbers). The decoder retraces it backwards with transposed
# convolutions and up-sampling, ending in a sigmoid: one probability per pixel.
# `strided` is the exercise (below): stride-2 convolutions instead of pooling.


# %%
def make_encoder(variant="lecture", latent_dim=2):
    if variant == "strided":  # 28 -> 14 -> 7 ('same' padding halves the size exactly)
        convolutions = [
            Conv2D(16, 5, strides=2, padding="same", activation="relu"),
            Conv2D(8, 5, strides=2, padding="same", activation="relu"),
        ]
    else:  # 28 -conv5-> 24 -pool-> 12 -conv5-> 8
        convolutions = [
            Conv2D(16, 5, activation="relu"),
            MaxPool2D(2),
            Conv2D(8, 5, activation="relu"),
        ]
    return Sequential(convolutions + [Flatten(), Dense(64, activation="relu"), Dense(latent_dim)])


def make_decoder(variant="lecture", latent_dim=2):
    if variant == "strided":
        grid = (7, 7, 8)
        deconvolutions = [
            Conv2DTranspose(16, 5, strides=2, padding="same", activation="relu"),  # 7 -> 14
            Conv2DTranspose(1, 5, strides=2, padding="same", activation="sigmoid"),
        ]  # -> 28
    else:
        grid = (8, 8, 8)
        deconvolutions = [
            Conv2DTranspose(16, 5, activation="relu"),  # 8 -> 12
            UpSampling2D(2),  # 12 -> 24
            Conv2DTranspose(1, 5, activation="sigmoid"),
        ]  # 24 -> 28
    return Sequential(
        [Dense(64, activation="relu"), Dense(int(np.prod(grid)), activation="relu"), Reshape(grid)]
        + deconvolutions
    )


def make_autoencoder(variant="lecture", seed=SEED):
    """Encoder and decoder with weights drawn from `seed`, as examples/fashion_autoencoder.py."""
    backend.seed(seed)
    encoder, decoder = make_encoder(variant), make_decoder(variant)
    autoencoder = Sequential([encoder, decoder])
    autoencoder.build(IMAGE_SHAPE)
    return encoder, decoder, autoencoder


encoder, decoder, autoencoder = make_autoencoder()
encoder.summary(IMAGE_SHAPE)  # the lecture: 36,586 parameters
decoder.summary((2,))  # the lecture: 37,089

# %% [markdown]
# ## The loss: binary cross-entropy
#
# −[x log p + (1 − x) log(1 − p)] per pixel, averaged, with Keras's clip of p to
# [1e-7, 1 − 1e-7]. The targets are grey levels, so the loss cannot reach 0.


# %%
def binary_crossentropy(target, probs):
    p = F.clip(probs, 1e-7, 1 - 1e-7)
    return -(target * F.log(p) + (1 - target) * F.log(1 - p)).mean()


def predict(model, x, batch_size=256):
    """`model` on the host array `x` in batches, without a graph."""
    with minivae.no_grad():
        return np.concatenate(
            [model(to_device(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
        )


# %% [markdown]
# ## Encodings before training
#
# 1,000 test images through the untrained encoder, coloured by class: random weights
# already spread them, but the classes overlap.

# %%
shown = np.random.default_rng(SEED).choice(len(x_test), min(1000, len(x_test)), replace=False)
before = predict(encoder, x_test[shown])


def plot_encodings(panels):
    cmap = plt.get_cmap("jet", 10)
    _, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 6.5), squeeze=False)
    for ax, (codes, title) in zip(axes[0], panels):
        for c, name in enumerate(FASHION_MNIST_CLASSES):
            chosen = y_test[shown] == c
            ax.scatter(
                codes[chosen, 0], codes[chosen, 1], color=cmap(c), label=name, alpha=0.7, s=12
            )
        ax.set(xlabel="$z_1$", ylabel="$z_2$", title=title)
        ax.legend(fontsize=8)
    plt.show()


plot_encodings([(before, "encodings before training")])

# %% [markdown]
# ## Training
#
# Adam, learning rate 1e-3, batches of 64, 10 epochs (the lecture's run); `fit` prints each
# epoch's training loss (`loss`, the mean over the epoch's batches, as Keras prints it) and
# the test loss (`val_loss`).


# %%
def train_autoencoder(autoencoder, loss_fn):
    optimizer = Adam(autoencoder.parameters(), lr=1e-3)
    history = fit(
        autoencoder,
        loss_fn,
        optimizer,
        x_train,
        x_val=x_test,
        epochs=EPOCHS,
        batch_size=64,
        seed=SEED,
    )
    print(
        f"final training loss {history.metrics['loss'][-1]:.4f}, "
        f"test loss {history.metrics['val_loss'][-1]:.4f}"
    )
    return history


history = train_autoencoder(autoencoder, lambda x: {"loss": binary_crossentropy(x, autoencoder(x))})
if not SMALL:
    print(
        "docs/results.md: final training loss 0.3265, test loss 0.3285 "
        "(the lecture's Keras run: 0.3268)"
    )

# %% [markdown]
# ## Encodings after training, and reconstructions
#
# The same test images through the trained encoder: the classes now sit in their own
# regions of the plane (trousers apart, shirts, pullovers and coats close together).

# %%
after = predict(encoder, x_test[shown])
plot_encodings([(before, "before training"), (after, "after training")])

firsts = [int(np.argmax(y_test == c)) for c in range(10) if np.any(y_test == c)]


def plot_rows(rows, titles):
    _, axes = plt.subplots(len(rows), len(firsts), figsize=(1.2 * len(firsts), 1.35 * len(rows)))
    for r, (images, title) in enumerate(zip(rows, titles)):
        for c, ax in enumerate(axes[r]):
            ax.imshow(images[c, ..., 0], cmap="binary", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(FASHION_MNIST_CLASSES[y_test[firsts[c]]], fontsize=8)
        axes[r][0].set_ylabel(title)
    plt.show()


clean = x_test[firsts] / np.float32(255)
plot_rows([clean, predict(autoencoder, x_test[firsts])], ["original", "reconstructed"])

# %% [markdown]
# ## The exercise: strides instead of pooling
#
# > Redesign the CNN autoencoder above using strides ≥ 2 for the encoder, and design the
# > decoder to be the reverse architecture.
#
# Two stride-2 convolutions halve 28 to 14 to 7; the decoder's stride-2 transposed
# convolutions double 7 back to 28. No pooling, no up-sampling layer.

# %%
s_encoder, s_decoder, strided = make_autoencoder("strided")
s_encoder.summary(IMAGE_SHAPE)
s_decoder.summary((2,))
s_history = train_autoencoder(strided, lambda x: {"loss": binary_crossentropy(x, strided(x))})
if not SMALL:
    print("docs/results.md: final training loss 0.3244, test loss 0.3263")
plot_rows([clean, predict(strided, x_test[firsts])], ["original", "strided"])


# %% [markdown]
# ## The denoising autoencoder
#
# Vincent & Larochelle (2010): feed a corrupted copy of each image (Gaussian noise of
# standard deviation 0.3, clipped to [0, 1]) and score the reconstruction against the
# clean image. Fresh noise is drawn at every step, so each epoch sees new corruptions;
# the test loss corrupts the test images too.


# %%
def corrupt(x, noise_std=0.3):
    noisy = backend.xp().clip(x.data + noise_std * backend.normal(x.shape, x.dtype), 0.0, 1.0)
    return minivae.Tensor(noisy)  # a constant: no gradient flows into the input


_, _, denoiser = make_autoencoder("lecture")
d_history = train_autoencoder(
    denoiser, lambda x: {"loss": binary_crossentropy(x, denoiser(corrupt(x)))}
)
if not SMALL:
    print("docs/results.md: final training loss 0.3286, test loss 0.3299 (noisy inputs)")
noisy = corrupt(to_device(x_test[firsts])).numpy()
plot_rows([noisy, clean, predict(denoiser, noisy)], ["noisy", "clean", "denoised"])

# %% [markdown]
# The three runs side by side (training loss per epoch):

# %%
for name, h in (("lecture", history), ("strided", s_history), ("denoising", d_history)):
    plt.plot(np.arange(1, len(h) + 1), h.metrics["loss"], marker="o", label=name)
plt.xlabel("epoch")
plt.ylabel("binary cross-entropy")
plt.legend()
plt.show()
