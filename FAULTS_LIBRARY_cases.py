"""Run each library fault case and print: name | exception type: message (or the silent result)."""
import os, sys, tempfile, warnings
import numpy as np
warnings.simplefilter("ignore")
import minivae as mv
from minivae import Tensor, gradcheck, nn
import minivae.functional as F
from minivae.tensor import record
from minivae.distributions import Bernoulli, Normal, StandardNormal
from minivae.optim import Adam, SGD
from minivae.train import fit, evaluate, save_checkpoint, load_checkpoint, History

tmp = tempfile.mkdtemp()
def path(name, data=None):
    p = os.path.join(tmp, name)
    if data is not None:
        with open(p, "wb") as f:
            f.write(data)
    return p

def dense_model():
    m = nn.Sequential([nn.Dense(3)]); m.build((4,)); return m

def good_npz():
    m = dense_model(); p = path("good.npz"); m.save_weights(p); return p

def _try(f):
    try:
        f(); return True
    except Exception:
        return False

def vae_bern():
    enc = nn.Sequential([nn.Dense(4)]); dec = nn.Sequential([nn.Dense(6)])
    return mv.VAE(enc, dec, likelihood="bernoulli")

def ckpt(nan=False, bad_opt=False):
    m = dense_model(); o = Adam(m.parameters())
    if nan:
        m.layers[0].kernel.data = m.layers[0].kernel.data * np.nan
    p = path(f"ck{nan}{bad_opt}.npz"); save_checkpoint(p, m, o, History(seed=0))
    if bad_opt:
        a = dict(np.load(p)); a["optimizer/m.0"] = np.zeros((9, 9), np.float32); np.savez(p, **a)
    return p

def half_load():
    p = ckpt(bad_opt=True); m = dense_model(); before = m.state_dict()["layers.0.kernel"].copy()
    try:
        load_checkpoint(p, m, Adam(m.parameters()))
    finally:
        changed = not np.array_equal(before, m.state_dict()["layers.0.kernel"])
        print(f"   (model weights changed before the error: {changed})")

def bad_backward(x):
    return record(x.data * 2, (x,), lambda g: (g * np.nan,), "nan_backward").sum()

def nan_value(x):
    return record(x.data * np.nan, (x,), lambda g: (g,), "nan_value").sum()

def conv_mix(cls):
    layer = cls(2, 3); layer.build((5, 5, 1), dtype="float32")
    out = layer(Tensor(np.ones((1, 5, 5, 1))))
    return f"output {out.dtype}"

def adam_after_mix():
    layer = nn.Conv2D(2, 3); layer.build((5, 5, 1), dtype="float32")
    opt = Adam(layer.parameters())
    layer(Tensor(np.ones((1, 5, 5, 1)))).sum().backward(); opt.step()
    return f"kernel after a step: {layer.kernel.dtype}"

def layer_mix(layer, shape):
    layer.build(shape, dtype="float32")
    return f"output {layer(Tensor(np.ones((1, *shape)))).dtype}"

def fit_case(**kw):
    m = dense_model(); o = Adam(m.parameters())
    loss = kw.pop("loss_fn", lambda x: {"loss": (m(x) ** 2).mean()})
    xt = kw.pop("x_train", np.ones((8, 4), np.float32))
    h = fit(m, loss, o, xt, epochs=1, verbose=False, **kw)
    return f"history {h.metrics}"

CASES = {
    "4 gradcheck sqrt(x*x) at 0 (NaN analytic)": lambda: gradcheck(lambda x: F.sqrt(x * x).sum(), [np.array([0.0, 1.0])]),
    "4 gradcheck backward returning g*nan": lambda: gradcheck(bad_backward, [np.array([1.0, 2.0])]),
    "4 gradcheck of a NaN function value": lambda: gradcheck(nan_value, [np.array([1.0, 2.0])]),
    "4 gradcheck log(x) at x=-1 (NaN value and gradient)": lambda: gradcheck(lambda x: F.log(x).sum(), [np.array([-1.0])]),
    "5 Conv2D float32 fed float64": lambda: conv_mix(nn.Conv2D),
    "5 Conv2DTranspose float32 fed float64": lambda: conv_mix(nn.Conv2DTranspose),
    "5 Conv2D weights after Adam on a float64 batch": adam_after_mix,
    "5 MaxPool2D built float32 fed float64": lambda: layer_mix(nn.MaxPool2D(2), (4, 4, 1)),
    "5 UpSampling2D built float32 fed float64": lambda: layer_mix(nn.UpSampling2D(2), (2, 2, 1)),
    "5 Flatten built float32 fed float64": lambda: layer_mix(nn.Flatten(), (2, 2)),
    "5 Reshape built float32 fed float64": lambda: layer_mix(nn.Reshape((4,)), (2, 2)),
    "5 conv2d(f32 x, f64 kernel)": lambda: F and nn.conv.conv2d(Tensor(np.ones((1, 3, 3, 1)), dtype="float32"), Tensor(np.ones((2, 2, 1, 1)))).dtype,
    "6 Bernoulli.log_prob(x=255)": lambda: Bernoulli(Tensor([0.0])).log_prob(Tensor([255.0])).numpy(),
    "6 Bernoulli.log_prob(x=-0.5)": lambda: Bernoulli(Tensor([0.0])).log_prob(Tensor([-0.5])).numpy(),
    "6 VAE(bernoulli).elbo on 0..255 data": lambda: float(vae_bern().elbo(Tensor(np.full((2, 6), 255.0)))["loss"].numpy()),
    "6 VAE(bernoulli).elbo on a raw uint8 array": lambda: float(vae_bern().elbo(np.full((2, 6), 255, np.uint8))["loss"].numpy()),
    "7 concatenate axis=5 on 2-d": lambda: F.concatenate([Tensor(np.ones((2, 3)))] * 2, axis=5).shape,
    "7 stack axis=7 on 2-d": lambda: F.stack([Tensor(np.ones((2, 3)))] * 2, axis=7).shape,
    "7 unstack axis=4 on 2-d": lambda: len(F.unstack(Tensor(np.ones((2, 3))), axis=4)),
    "7 split axis=3 on 2-d": lambda: len(F.split(Tensor(np.ones((2, 4))), 2, axis=3)),
    "7 split(x, [4, -1]) on an axis of 3": lambda: [p.shape for p in F.split(Tensor(np.ones((2, 3))), [4, -1])],
    "7 concatenate([])": lambda: F.concatenate([]),
    "8 Tensor(None)": lambda: Tensor(None).numpy(),
    "8 Tensor(complex array)": lambda: Tensor(np.array([1 + 2j, 3j])).numpy(),
    "8 Tensor('abc')": lambda: Tensor("abc").numpy(),
    "9 load_checkpoint with a bad optimiser part (half-load?)": half_load,
    "s load_weights truncated file": lambda: dense_model().load_weights(path("t.npz", open(good_npz(), "rb").read()[:100])),
    "s load_weights empty file": lambda: dense_model().load_weights(path("e.npz", b"")),
    "s load_weights text file": lambda: dense_model().load_weights(path("x.npz", b"hello weights\n")),
    "s load_weights .npy file": lambda: (np.save(path("w.npy"), np.ones(3)), dense_model().load_weights(path("w.npy")))[1],
    "s load_weights missing file": lambda: dense_model().load_weights(path("nope.npz")),
    "s load_weights NaN weights": lambda: (np.savez(path("n.npz"), **{k: v * np.nan for k, v in dense_model().state_dict().items()}), dense_model().load_weights(path("n.npz")))[1],
    "s load_checkpoint truncated": lambda: load_checkpoint(path("ct.npz", open(ckpt(), "rb").read()[:200]), dense_model(), Adam(dense_model().parameters())),
    "s load_checkpoint with NaN weights": lambda: (lambda m: load_checkpoint(ckpt(nan=True), m, Adam(m.parameters())))(dense_model()),
    "s logsumexp over an empty axis": lambda: F.logsumexp(Tensor(np.ones((2, 0))), axis=-1).numpy(),
    "s Conv2D(strides=1.5)": lambda: nn.Conv2D(2, 3, strides=1.5),
    "s Conv2D(strides=np.int64(2))": lambda: nn.Conv2D(2, 3, strides=np.int64(2)).strides,
    "s Conv2D(kernel_size=np.int64(3))": lambda: nn.Conv2D(2, np.int64(3)).kernel_size,
    "s Conv2D(filters=0)": lambda: nn.Conv2D(0, 3).filters,
    "s Conv2D(2, kernel_size=True)": lambda: nn.Conv2D(2, True).kernel_size,
    "s MaxPool2D(pool_size=np.int64(2))": lambda: nn.MaxPool2D(np.int64(2)).pool_size,
    "s UpSampling2D(size=2.0)": lambda: nn.UpSampling2D(2.0).size,
    "s sum(axis=1.0)": lambda: Tensor(np.ones((2, 3))).sum(axis=1.0).shape,
    "s sum(axis=np.int64(1))": lambda: Tensor(np.ones((2, 3))).sum(axis=np.int64(1)).shape,
    "s Flatten on a 0-d input": lambda: nn.Flatten()(Tensor(1.0)).shape,
    "s build(4)": lambda: nn.Sequential([nn.Dense(3)]).build(4),
    "s Normal.sample(2)": lambda: Normal(Tensor([0.0]), Tensor([1.0])).sample(2).shape,
    "s Bernoulli.sample(2)": lambda: Bernoulli(Tensor([0.0])).sample(2).shape,
    "s fit batch_size=2.5": lambda: fit_case(batch_size=2.5),
    "s fit loss dict without 'loss'": lambda: (lambda m: fit(m, lambda x: {"kl": (m(x) ** 2).mean()}, Adam(m.parameters()), np.ones((8, 4), np.float32), epochs=1, verbose=False))(dense_model()),
    "s fit epochs=1.5": lambda: fit_case(epochs=1.5) if False else (lambda m: fit(m, lambda x: {"loss": (m(x) ** 2).mean()}, Adam(m.parameters()), np.ones((8, 4), np.float32), epochs=1.5, verbose=False).metrics)(dense_model()),
    "s fit empty validation set": lambda: fit_case(x_val=np.ones((0, 4), np.float32)),
    "s fit empty training set": lambda: fit_case(x_train=np.ones((0, 4), np.float32)),
    "s evaluate on an empty set": lambda: (lambda m: evaluate(m, lambda x: {"loss": (m(x) ** 2).mean()}, np.ones((0, 4), np.float32)))(dense_model()),
    "s mean of an empty batch (empty batch loss)": lambda: float((Tensor(np.ones((0, 4))) ** 2).mean().numpy()),
    "s VAE.elbo on an empty batch": lambda: float(vae_bern().elbo(Tensor(np.ones((0, 6))))["loss"].numpy()),
    "s Tensor(x, dtype=np.float32)": lambda: Tensor([1.0], dtype=np.float32).dtype,
    "s Tensor(x, dtype=np.dtype('float64'))": lambda: Tensor([1.0], dtype=np.dtype("float64")).dtype,
    "s float64 Tensor + int64 array": lambda: Tensor(np.ones(2)) + np.array([1, 2]),
    "s Dense(2.9)": lambda: nn.Dense(2.9).units,
    "s Dense(0)": lambda: nn.Dense(0).units,
    "s Dense(True)": lambda: nn.Dense(True).units,
    "s Dense(np.int64(3))": lambda: nn.Dense(np.int64(3)).units,
    "s Adam(lr=nan)": lambda: Adam(dense_model().parameters(), lr=float("nan")).lr,
    "s Adam(lr=inf)": lambda: Adam(dense_model().parameters(), lr=float("inf")).lr,
    "s Adam(lr=-1e-3)": lambda: Adam(dense_model().parameters(), lr=-1e-3).lr,
    "s Adam(beta1=1.0)": lambda: Adam(dense_model().parameters(), beta1=1.0).beta1,
    "s Adam(beta2=-0.1)": lambda: Adam(dense_model().parameters(), beta2=-0.1).beta2,
    "s Adam(eps=-1)": lambda: Adam(dense_model().parameters(), eps=-1.0).eps,
    "s SGD(lr=nan)": lambda: SGD(dense_model().parameters(), lr=float("nan")).lr,
    "s SGD(momentum=-0.5)": lambda: SGD(dense_model().parameters(), momentum=-0.5).momentum,
    "12 Tensor(uint8 array) values": lambda: Tensor(np.array([0, 255], np.uint8)).numpy(),
    "12 to_device(uint8) values": lambda: mv.train.to_device(np.array([0, 255], np.uint8)).numpy(),
    "12 Tensor.item()": lambda: Tensor([2.5]).item(),
    "12 float(Tensor([2.5]))": lambda: float(Tensor([2.5])),
    "12 float(Tensor([1., 2.]))": lambda: float(Tensor([1.0, 2.0])),
    # the hunt
    "h Tensor[np.int64(0)]": lambda: Tensor(np.ones((2, 3)))[np.int64(0)].shape,
    "h reshape(2.0, 3)": lambda: Tensor(np.ones((2, 3))).reshape(2.0, 3).shape,
    "h clip(low=1, high=-1)": lambda: F.clip(Tensor([0.0, 5.0]), 1.0, -1.0).numpy(),
    "h clip(low=nan)": lambda: F.clip(Tensor([0.0, 5.0]), float("nan")).numpy(),
    "h Tensor ** nan": lambda: (Tensor([2.0]) ** float("nan")).numpy(),
    "h pad with a fractional width": lambda: F.pad(Tensor(np.ones(2)), [(0.5, 1)]).shape,
    "h mean(axis=5)": lambda: Tensor(np.ones((2, 3))).mean(axis=5),
    "h sum(axis=(0, 0))": lambda: Tensor(np.ones((2, 3))).sum(axis=(0, 0)).shape,
    "h transpose(0, 0)": lambda: Tensor(np.ones((2, 3))).transpose(0, 0).shape,
    "h Normal.sample((-1,))": lambda: Normal(Tensor([0.0]), Tensor([1.0])).sample((-1,)).shape,
    "h Normal(loc, scale=nan)": lambda: Normal(Tensor([0.0]), Tensor([np.nan])).scale.numpy(),
    "h Bernoulli(logits=nan).log_prob": lambda: Bernoulli(Tensor([np.nan])).log_prob(Tensor([1.0])).numpy(),
    "h backward(grad with NaN)": lambda: Tensor([1.0], requires_grad=True).backward(Tensor([np.nan])),
    "h VAE.sample(2.0)": lambda: vae_bern().sample(2.0),
    "h Sequential.build((4.5,))": lambda: nn.Sequential([nn.Dense(3)]).build((4.5,)),
    "h Module.load_state_dict int-typed NaN-free dict of wrong dtype (object)": lambda: dense_model().load_state_dict({k: np.array(["a"] * v.size).reshape(v.shape) for k, v in dense_model().state_dict().items()}),
    "h save_checkpoint then load into an unbuilt model": lambda: (lambda m: load_checkpoint(ckpt(), m, None))(nn.Sequential([nn.Dense(3)])),
    "h optimizer.load_state_dict with NaN moments": lambda: (lambda m, o: o.load_state_dict({k: v * np.nan for k, v in o.state_dict().items()}))(*(lambda m: (m, Adam(m.parameters())))(dense_model())),
    "h VAE(likelihood='gaussian').elbo on a raw uint8 array": lambda: float(mv.VAE(nn.Sequential([nn.Dense(4)]), nn.Sequential([nn.Dense(12)])).elbo(np.full((2, 6), 255, np.uint8))["loss"].numpy()),
    "h log_marginal(bernoulli) on 0..255 data": lambda: vae_bern().log_marginal(Tensor(np.full((2, 6), 255.0)), samples=4, chunk=2),
    "h conv2d on a 3-d x": lambda: nn.conv.conv2d(Tensor(np.ones((3, 3, 1))), Tensor(np.ones((2, 2, 1, 1)))),
    "h conv2d strides=2 (not a pair)": lambda: nn.conv.conv2d(Tensor(np.ones((1, 3, 3, 1))), Tensor(np.ones((2, 2, 1, 1))), strides=2),
    "h max_pool2d pool_size=2 (not a pair)": lambda: nn.conv.max_pool2d(Tensor(np.ones((1, 4, 4, 1))), 2),
    "h Tensor[0.5:]": lambda: Tensor([1.0, 2.0])[0.5:],
    "h gradcheck eps=0": lambda: gradcheck(lambda x: x.sum(), [np.ones(2)], eps=0.0),
    "h gradcheck atol=nan (wrong gradient)": lambda: gradcheck(lambda x: record(x.data, (x,), lambda g: (g * 3,), "wrong").sum(), [np.ones(2)], atol=float("nan")),
    "h VAE(log_std_min=nan)": lambda: mv.VAE(nn.Dense(2), nn.Dense(2), log_std_min=float("nan")).log_std_min,
    "h Normal(event_ndim=1.5)": lambda: Normal(Tensor([0.0]), Tensor([1.0]), event_ndim=1.5).log_prob(Tensor([0.0])),
    "h VAE.decode(x_shape=(6.5,))": lambda: vae_bern().decode(Tensor(np.zeros((1, 2))), x_shape=(6.5,)),
    "h score_function_grad(baseline=nan)": lambda: mv.estimators.score_function_grad(lambda z: z.sum(axis=-1), lambda: Normal(Tensor([0.0], requires_grad=True), Tensor([1.0])), [], samples=2, baseline=float("nan")),
    "h VAE.elbo(samples=np.int64(2))": lambda: mv.VAE(nn.Sequential([nn.Dense(4)]), nn.Sequential([nn.Dense(12)])).elbo(Tensor(np.full((2, 6), 0.5)), samples=np.int64(2))["loss"].numpy(),
    "h to_device(list)": lambda: mv.train.to_device([[1.0, 2.0]]),
    "h where(float condition)": lambda: F.where(np.array([1.0, 0.0]), Tensor([1.0, 2.0]), Tensor([3.0, 4.0])).numpy(),
    "h backward returning a wrong shape": lambda: (lambda x: record(x.data * 2, (x,), lambda g: (g.sum(),), "my_op").sum().backward() or x.grad)(Tensor([1.0, 2.0], requires_grad=True)),
    "h backward returning float64 for a float32 input": lambda: (lambda x: record(x.data * 2, (x,), lambda g: (g.astype(np.float64),), "my_op").sum().backward() or x.grad.dtype)(Tensor([1.0, 2.0], requires_grad=True)),
    "h Sequential([Dense, 3])": lambda: nn.Sequential([nn.Dense(2), 3])(Tensor(np.ones((1, 2)))),
    "h build(dtype='int32')": lambda: (lambda m: (m.build((4,), dtype="int32"), m.layers[0].kernel.dtype)[1])(nn.Sequential([nn.Dense(3)])),
    "h StandardNormal(2.5)": lambda: StandardNormal(2.5).shape,
    "h fit(seed=-1)": lambda: fit_case(seed=-1),
    "h History.from_json without seed": lambda: History.from_json('{"metrics": {"loss": [1.0]}}').seed,
    "h a failed first Dense call fixes nothing": lambda: (lambda d: ([None for _ in [0] if not _try(lambda: d(Tensor(1.0, dtype="float64")))], d(Tensor(np.ones((1, 3)), dtype="float32")).dtype)[1])(nn.Dense(2)),
}

only = sys.argv[1:]
for name, case in CASES.items():
    if only and not any(o in name for o in only):
        continue
    try:
        result = case()
        text = f"NO ERROR -> {result!r}"[:300]
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:400]
    print(f"{name} || {text}")
