"""Optimisers: Adam against PyTorch and against the paper's Algorithm 1, SGD against
PyTorch, and training that resumes exactly from a checkpoint."""

import numpy as np
import pytest

import minivae
from minivae import Tensor, nn
from minivae import functional as F
from minivae.nn.module import save_npz
from minivae.optim import SGD, Adam

RNG = np.random.default_rng(0)
X, Y = RNG.standard_normal((8, 3)), RNG.uniform(-0.9, 0.9, (8, 2))
W0, B0 = RNG.standard_normal((3, 2)), RNG.standard_normal(2)


def minivae_trajectory(make_optimizer, steps):
    """Parameters after each step of minimising mean((tanh(X W + b) - Y)^2)."""
    w, b = Tensor(W0, requires_grad=True), Tensor(B0, requires_grad=True)
    opt, x, y = make_optimizer([w, b]), Tensor(X), Tensor(Y)
    path = []
    for _ in range(steps):
        opt.zero_grad()
        ((F.tanh(x @ w + b) - y) ** 2).mean().backward()
        opt.step()
        path.append((np.array(w.numpy()), np.array(b.numpy())))  # copies: step() works in place
    return path


def torch_trajectory(torch, make_optimizer, steps):
    w, b = torch.tensor(W0, requires_grad=True), torch.tensor(B0, requires_grad=True)
    opt, x, y = make_optimizer([w, b]), torch.tensor(X), torch.tensor(Y)
    path = []
    for _ in range(steps):
        opt.zero_grad()
        ((torch.tanh(x @ w + b) - y) ** 2).mean().backward()
        opt.step()
        path.append((w.detach().numpy().copy(), b.detach().numpy().copy()))
    return path


def assert_same_path(ours, theirs, atol):
    for step, ((w1, b1), (w2, b2)) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(
            w1, w2, rtol=0, atol=atol, err_msg=f"kernel after step {step + 1}"
        )
        np.testing.assert_allclose(b1, b2, rtol=0, atol=atol, err_msg=f"bias after step {step + 1}")


def test_adam_follows_torch_for_100_steps(torch):
    ours = minivae_trajectory(lambda p: Adam(p, lr=0.05, eps=1e-7), 100)
    theirs = torch_trajectory(torch, lambda p: torch.optim.Adam(p, lr=0.05, eps=1e-7), 100)
    assert_same_path(ours, theirs, atol=1e-6)
    assert not np.allclose(ours[0][0], ours[-1][0])  # it did move


def test_sgd_with_and_without_momentum_follows_torch(torch):
    for momentum in (0.0, 0.9):
        ours = minivae_trajectory(lambda p, m=momentum: SGD(p, lr=0.1, momentum=m), 50)
        theirs = torch_trajectory(
            torch, lambda p, m=momentum: torch.optim.SGD(p, lr=0.1, momentum=m), 50
        )
        assert_same_path(ours, theirs, atol=1e-10)


def test_adam_is_the_papers_algorithm_1():
    """Kingma & Ba (2015), Algorithm 1, transcribed line by line, on f(theta) = |A theta - c|^2 /
    2."""
    a, c, theta0 = RNG.standard_normal((5, 4)), RNG.standard_normal(5), RNG.standard_normal(4)
    alpha, beta1, beta2, epsilon = 0.01, 0.9, 0.999, 1e-7

    expected, theta, m, v, t = [], theta0, np.zeros(4), np.zeros(4), 0
    for _ in range(100):
        t = t + 1
        g = a.T @ (a @ theta - c)  # the gradient of the stochastic objective at step t
        m = beta1 * m + (1 - beta1) * g  # biased first moment estimate
        v = beta2 * v + (1 - beta2) * g**2  # biased second raw moment estimate
        m_hat = m / (1 - beta1**t)  # bias-corrected first moment estimate
        v_hat = v / (1 - beta2**t)  # bias-corrected second raw moment estimate
        theta = theta - alpha * m_hat / (np.sqrt(v_hat) + epsilon)
        expected.append(theta)

    p = Tensor(theta0, requires_grad=True)
    opt, at, ct = Adam([p], lr=alpha, beta1=beta1, beta2=beta2, eps=epsilon), Tensor(a), Tensor(c)
    for step in range(100):
        opt.zero_grad()
        (((at @ p - ct) ** 2).sum() / 2).backward()
        opt.step()
        np.testing.assert_allclose(
            p.numpy(), expected[step], rtol=1e-12, atol=1e-12, err_msg=f"step {step + 1}"
        )


def test_adam_defaults_are_keras():
    opt = Adam([Tensor(np.ones(2), requires_grad=True)])
    assert (opt.lr, opt.beta1, opt.beta2, opt.eps) == (1e-3, 0.9, 0.999, 1e-7)


def test_step_skips_parameters_without_gradient_and_zero_grad_clears():
    used, unused = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(3), requires_grad=True)
    opt = Adam([used, unused], lr=0.1)
    (used * used).sum().backward()
    opt.step()
    assert not np.array_equal(used.numpy(), np.ones(2))
    np.testing.assert_array_equal(unused.numpy(), np.ones(3))
    opt.zero_grad()
    assert used.grad is None


def test_float32_stays_float32():
    p = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    opt = Adam([p])
    (p * p).sum().backward()
    opt.step()
    assert p.dtype == minivae.backend.dtype("float32")
    assert all(a.dtype == np.float32 for a in opt.state_dict().values() if a.ndim)


def test_empty_parameter_list_is_refused():
    with pytest.raises(
        ValueError, match=r"Adam: got an empty parameter list \(build the model first\)"
    ):
        Adam(nn.Dense(3).parameters())


# --- checkpoints: training resumes exactly ------------------------------------------------


def small_cnn():
    return nn.Sequential(
        [
            nn.Conv2D(3, 3, activation="relu"),
            nn.MaxPool2D(2),
            nn.Conv2DTranspose(2, 3, strides=2, padding="same", activation="tanh"),
            nn.Flatten(),
            nn.Dense(1),
        ]
    )


DATA = np.random.default_rng(1).uniform(size=(4, 6, 6, 1)).astype(np.float32)
TARGET = np.random.default_rng(2).uniform(size=(4, 1)).astype(np.float32)


def train(model, opt, steps):
    x, y = Tensor(DATA), Tensor(TARGET)
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def built(seed):
    minivae.seed(seed)
    model = small_cnn()
    model.build(DATA.shape[1:])
    return model


def test_training_resumes_bit_for_bit_from_a_checkpoint(tmp_path):
    straight = built(0)
    train(straight, Adam(straight.parameters(), lr=0.01), 10)

    first = built(0)
    opt = Adam(first.parameters(), lr=0.01)
    train(first, opt, 5)
    first.save_weights(tmp_path / "weights.npz")
    save_npz(tmp_path / "optimizer.npz", opt.state_dict())

    resumed = built(1)  # other initial weights, all overwritten by the checkpoint
    opt = Adam(resumed.parameters(), lr=0.01)
    resumed.load_weights(tmp_path / "weights.npz")
    with np.load(tmp_path / "optimizer.npz") as f:
        opt.load_state_dict(dict(f))
    assert opt.t == 5
    train(resumed, opt, 5)

    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_loading_a_state_that_does_not_fit_names_it_and_changes_nothing():
    model = built(0)
    adam = Adam(model.parameters(), lr=0.01)
    train(model, adam, 2)
    before = adam.state_dict()

    sgd = SGD(model.parameters(), momentum=0.9)
    with pytest.raises(
        ValueError,
        match=r"Adam.load_state_dict: the state does not fit this optimiser \(missing \['m.0'",
    ):
        adam.load_state_dict(sgd.state_dict())

    other = nn.Sequential(
        [
            nn.Conv2D(4, 3),
            nn.MaxPool2D(2),
            nn.Conv2DTranspose(2, 3, strides=2, padding="same"),
            nn.Flatten(),
            nn.Dense(1),
        ]
    )
    other.build(DATA.shape[1:])
    expected = r"state m.0 has shape \(3, 3, 1, 4\), the parameter it belongs to has \(3, 3, 1, 3\)"
    with pytest.raises(ValueError, match=expected):
        adam.load_state_dict(Adam(other.parameters()).state_dict())

    after = adam.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


# --- one flat update equals the per-parameter update ----------------------------------------


def per_parameter_adam(params, grads, state, lr, b1=0.9, b2=0.999, eps=1e-7):
    """Algorithm 1, one parameter at a time, on host arrays (what Adam did before it worked on
    one flat array); a gradient None leaves that parameter and its moments alone."""
    state["t"] += 1
    t = state["t"]
    for i, g in enumerate(grads):
        if g is None:
            continue
        state["m"][i] = b1 * state["m"][i] + (1 - b1) * g
        state["v"][i] = b2 * state["v"][i] + (1 - b2) * (g * g)
        m_hat, v_hat = state["m"][i] / (1 - b1**t), state["v"][i] / (1 - b2**t)
        params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + eps)


def fresh_state(params):
    return {
        "t": 0,
        "m": [np.zeros_like(p) for p in params],
        "v": [np.zeros_like(p) for p in params],
    }


def host(arrays):
    """Host copies of Tensors or of backend arrays (gradients)."""
    return [np.array(minivae.to_numpy(a)) for a in arrays]


def test_flat_adam_equals_per_parameter_adam_with_a_parameter_left_out():
    # float64 weights of a small CNN; from step 4 on the last weight gets no gradient, as a
    # frozen part of a model would, and must keep its value and its moments
    model = nn.Sequential([nn.Conv2D(3, 3, activation="relu"), nn.Flatten(), nn.Dense(2)])
    model.build(DATA.shape[1:], dtype="float64")
    params = model.parameters()
    opt = Adam(params, lr=0.01)
    expected = host(params)
    state = fresh_state(expected)
    x = Tensor(DATA.astype(np.float64))
    for step in range(8):
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        if step >= 3:
            params[-1].grad = None
        grads = [None if p.grad is None else host([p.grad])[0] for p in params]
        per_parameter_adam(expected, grads, state, lr=0.01)
        opt.step()
        for i, (p, want) in enumerate(zip(params, expected)):
            np.testing.assert_allclose(p.numpy(), want, rtol=1e-14, atol=0, err_msg=f"{step} {i}")
    saved = opt.state_dict()
    assert saved["t"] == state["t"]
    for i in range(len(params)):
        np.testing.assert_allclose(saved[f"m.{i}"], state["m"][i], rtol=1e-14, atol=0)
        np.testing.assert_allclose(saved[f"v.{i}"], state["v"][i], rtol=1e-14, atol=0)


@pytest.mark.backends("numpy")  # the one backend that updates in blocks (the CPU's cache)
@pytest.mark.parametrize(
    "make",
    [lambda p: Adam(p, lr=0.01), lambda p: SGD(p, lr=0.1, momentum=0.9)],
    ids=["Adam", "SGD"],
)
def test_the_update_in_blocks_is_the_update_over_everything(monkeypatch, make):
    # the small CNN's 119 entries in blocks of 5 (the last one short), each parameter cut
    # across blocks, against one pass over all of them: elementwise, so the same bits
    whole, blocked = built(0), built(0)
    whole_opt, blocked_opt = make(whole.parameters()), make(blocked.parameters())
    train(whole, whole_opt, 4)
    monkeypatch.setattr(minivae.optim, "CPU_BLOCK", 5)
    flat = blocked_opt._flat_parameters()
    assert [a.size for a, *_ in blocked_opt._in_blocks(flat)] == [5] * 23 + [4]
    train(blocked, blocked_opt, 4)
    for (name, a), (_, b) in zip(whole.named_parameters(), blocked.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    for key in whole_opt.state:
        np.testing.assert_array_equal(whole_opt.state[key], blocked_opt.state[key], err_msg=key)


def test_a_replaced_parameter_array_is_picked_up_by_the_next_step():
    # load_state_dict, load_weights or `p.data = ...` give a parameter a new array, which is
    # not a view into the optimiser's flat array: the next step must start from it
    model = built(0)
    opt = SGD(model.parameters(), lr=0.1)
    train(model, opt, 2)
    other = built(1)
    model.load_state_dict(other.state_dict())
    kernel = model.parameters()[0]
    kernel.data = kernel.data * 0 + 0.5
    start = host(model.parameters())
    train(model, opt, 1)
    grads = host([p.grad for p in model.parameters()])
    for p, p0, g in zip(model.parameters(), start, grads):
        np.testing.assert_allclose(p.numpy(), p0 - 0.1 * g, rtol=1e-6, atol=1e-7)


def test_two_optimisers_on_the_same_parameters_take_turns():
    model = built(0)
    first, second = SGD(model.parameters(), lr=0.1), SGD(model.parameters(), lr=0.01)
    train(model, first, 1)
    start = host(model.parameters())
    train(model, second, 1)  # the second one must start where the first one left them
    grads = host([p.grad for p in model.parameters()])
    for p, p0, g in zip(model.parameters(), start, grads):
        np.testing.assert_allclose(p.numpy(), p0 - 0.01 * g, rtol=1e-6, atol=1e-7)


def test_a_parameter_twice_or_two_dtypes_are_refused():
    w = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="Adam: a parameter appears twice in the list"):
        Adam([w, w])
    w32 = Tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    with pytest.raises(
        ValueError, match=r"SGD: the parameters mix dtypes \['float32', 'float64'\]"
    ):
        SGD([w, w32])
