"""minivae.graph: the captured graph, its DOT text, the backward walk, rendering with Graphviz."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minivae
from minivae import backend, graph
from minivae import functional as F
from minivae.distributions import Normal
from minivae.nn import Dense, Flatten, Module, Sequential
from minivae.tensor import Tensor

ROOT = Path(__file__).resolve().parents[1]
NODE = re.compile(r'^\s*((?:n|layer_)\w*) \[label="((?:[^"\\]|\\.)*)"(.*)\];$', re.MULTILINE)
EDGE = re.compile(r"^\s*(\w+) -> (\w+)( \[.*\])?;$", re.MULTILINE)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def parse(dot):
    """{node id: (label, attributes)} and [(tail, head, attributes)] of a DOT text, no legend."""
    nodes = {m.group(1): (m.group(2).replace("\\n", "\n"), m.group(3)) for m in NODE.finditer(dot)}
    edges = [
        (m.group(1), m.group(2), m.group(3) or "")
        for m in EDGE.finditer(dot)
        if not m.group(1).startswith("legend")
    ]
    return nodes, edges


def by_label(nodes, first_line):
    found = [i for i, (label, _) in nodes.items() if label.split("\n")[0] == first_line]
    assert len(found) == 1, f"{first_line!r}: {found} in {sorted(v[0] for v in nodes.values())}"
    return found[0]


def need_dot():
    if shutil.which("dot") is None:
        from conftest import need

        need("Graphviz's dot", "apt-get install graphviz (CI installs it in .ci/run)")


def worked_example():
    """f = (x y + x)^2: x is used twice."""
    x = Tensor(2.0, requires_grad=True, dtype="float64")
    y = Tensor(3.0, requires_grad=True, dtype="float64")
    u = x * y
    v = u + x
    f = v**2
    return x, y, u, v, f


# --- the structure ---------------------------------------------------------------------------


def test_worked_example_has_exactly_its_nodes_and_edges():
    x, y, *_, f = worked_example()
    g = graph.capture(f, names={"x": x, "y": y})
    nodes, edges = parse(g.to_dot(legend=False))
    assert len(nodes) == 5 and len(edges) == 5  # x, y, u, v, f; x->u, y->u, u->v, x->v, v->f
    ids = {name: by_label(nodes, name) for name in ("x", "y", "multiply", "add", "power")}
    assert sorted(edges) == sorted(
        (ids[a], ids[b], "")
        for a, b in [
            ("x", "multiply"),
            ("y", "multiply"),
            ("multiply", "add"),
            ("x", "add"),
            ("add", "power"),
        ]
    )
    # x, used twice, is drawn once with two edges out of it
    assert [a for a, _, _ in edges].count(ids["x"]) == 2
    assert nodes[ids["multiply"]][0] == "multiply\n()"
    assert 'peripheries="2"' in nodes[ids["power"]][1]  # the output


def test_labels_name_ops_shapes_and_parameters_of_a_model():
    model = Sequential([Flatten(), Dense(4, "relu")])
    x = Tensor(backend.normal((5, 2, 3), backend.dtype("float32")))
    with graph.layers() as calls:
        loss = model(x).sum()
    g = graph.capture(loss, model=model, names={"x": x}, layers=calls)
    nodes, edges = parse(g.to_dot(legend=False))
    # the flattened x (a reshape of data: no graph behind it), kernel, bias, dense, relu, sum
    assert len(nodes) == 6 and len(edges) == 5
    assert nodes[by_label(nodes, "layers.1.kernel")][0] == "layers.1.kernel\n(6, 4)"
    assert nodes[by_label(nodes, "layers.1.bias")][0] == "layers.1.bias\n(4,)"
    assert nodes[by_label(nodes, "dense")][0] == "dense\n(5, 4)"
    assert nodes[by_label(nodes, "relu")][0] == "relu\n(5, 4)"
    assert nodes[by_label(nodes, "data")][0] == "data\n(5, 6), made by reshape\nno gradient path"
    dot = g.to_dot(legend=False)
    box = dot[dot.index("subgraph cluster_layers_1 {") :]
    assert 'label="layers.1 Dense"' in box
    for op in ("dense", "relu", "layers.1.kernel"):  # the Dense made them; sum is outside
        assert f'label="{op}\\n' in box[: box.index("}")]
    assert 'label="sum\\n' not in box[: box.index("}")]


def test_collapse_draws_each_layer_as_one_node():
    model = Sequential([Dense(3, "tanh"), Dense(2)])
    x = Tensor(backend.normal((4, 5), backend.dtype("float32")))
    with graph.layers() as calls:
        loss = F.square(model(x)).mean()
    g = graph.capture(loss, model=model, layers=calls)
    nodes, edges = parse(g.to_dot(collapse=True, legend=False))
    # x, the two Dense layers, square, mean
    assert len(nodes) == 5 and len(edges) == 4
    first = nodes["layer_layers_0"][0].split("\n")
    assert first == ["layers.0 Dense", "out (4, 3)", "kernel (5, 3)", "bias (3,)"]
    assert ("layer_layers_0", "layer_layers_1", "") in edges
    full_nodes, _ = parse(g.to_dot(legend=False))
    assert (
        len(full_nodes) == 1 + 4 + 3 + 2
    )  # x; kernel bias dense tanh; kernel bias dense; square mean


def test_eps_is_a_constant_and_mu_sigma_lie_on_the_gradient_path():
    mu = Tensor(backend.normal((3, 2), backend.dtype("float64")), requires_grad=True)
    log_var = Tensor(backend.normal((3, 2), backend.dtype("float64")), requires_grad=True)
    eps = Tensor(backend.normal((3, 2), backend.dtype("float64")))
    z = Normal.from_log_var(mu, log_var).rsample(eps=eps)
    loss = F.square(z).sum()
    g = graph.capture(loss, names={"mu": mu, "log_var": log_var, "eps": eps})
    marked = g.reparameterisation(eps)
    assert len(marked) == 7  # eps, sigma * eps, z, mu, sigma, log_sigma, log_var
    nodes, edges = parse(g.to_dot(legend=False, highlight={"the reparameterisation": marked}))
    e = by_label(nodes, "eps")
    assert "dashed" in nodes[e][1] and "no gradient path" in nodes[e][0]
    assert [attrs for a, _, attrs in edges if a == e] == [' [style=dashed, color="#999999"]']
    for name in ("mu", "log_var", "z = add", "sigma = exp"):
        assert "dashed" not in nodes[by_label(nodes, name)][1], name
    loss.backward()
    nodes, _ = parse(g.to_dot(grads=True, legend=False))
    assert nodes[by_label(nodes, "eps")][0].endswith("received no gradient")
    norm = np.linalg.norm(minivae.to_numpy(mu.grad))
    assert nodes[by_label(nodes, "mu")][0].endswith(f".grad (3, 2), ||g|| = {norm:.3g}")


def test_the_vae_graph_is_grouped_by_layer_and_marks_the_reparameterisation():
    encoder = Sequential([Dense(3, "relu"), Dense(4)])
    decoder = Sequential([Dense(3, "relu"), Dense(2 * 6)])
    vae = minivae.VAE(encoder, decoder)
    x = Tensor(backend.uniform((5, 6), backend.dtype("float32")))
    g, highlight = graph.elbo_graph(vae, x)
    dot = g.to_dot(highlight=highlight)
    for label in ("encoder Sequential", "encoder.layers.0 Dense", "decoder.layers.1 Dense"):
        assert f'label="{label}"' in dot
    box = dot[dot.index("subgraph cluster_highlight_0") :]
    box = box[: box.index("  }")]
    assert "the reparameterisation" in box
    for name in ("eps", "z = add", "mu = split", "sigma = exp", "sigma * eps = multiply"):
        assert f'label="{name}\\n' in box, name
    assert 'label="loss = add\\n()' in dot and 'label="kl = ' in dot and 'label="nll = ' in dot
    parameters = dict(vae.named_parameters())
    for name in parameters:
        assert f'label="{name}\\n' in dot
    assert all(p.grad is None for p in parameters.values())  # capturing runs no backward


def test_the_structure_survives_backward_and_cannot_be_captured_after():
    _, _, u, _, f = worked_example()
    g = graph.capture(f)
    before = parse(g.to_dot(legend=False))[1]
    f.backward()
    assert u.parents == ()  # backward() freed the graph ...
    assert parse(g.to_dot(legend=False))[1] == before  # ... but the captured copy kept it
    with pytest.raises(ValueError, match="already freed .* capture it before"):
        graph.capture(f)


def test_layers_recording_is_off_outside_its_block():
    assert Module.call_log is None
    with graph.layers() as calls:
        Dense(2)(Tensor(backend.normal((1, 3), backend.dtype("float32"))))
    assert Module.call_log is None and len(calls) == 1
    Dense(2)(Tensor(backend.normal((1, 3), backend.dtype("float32"))))
    assert len(calls) == 1


def test_summary_inside_layers_leaves_the_recording_on():
    model = Sequential([Dense(2)])
    x = Tensor(backend.normal((1, 3), backend.dtype("float32")))
    with graph.layers() as calls:
        model.summary((3,), print_fn=lambda line: None)
        model(x)
    assert [type(m).__name__ for m, _, _ in calls] == ["Dense", "Sequential"]
    assert calls[0][1] == ((x,), {})  # (args, kwargs) of the call


# --- the backward walk -----------------------------------------------------------------------


def check_walk(g, leaves):
    """Every tensor on a gradient path visited once, after every tensor made from it; the
    leaves' norms those of their .grad."""
    order = [i for i, _, _ in g.walk]
    on_path = [i for i, t in enumerate(g.nodes) if t.requires_grad]
    assert sorted(order) == on_path
    position = {i: k for k, i in enumerate(order)}
    for i in order:
        for c in g.children[i]:
            assert position[c] < position[i], (
                f"{g.name(i)} visited before {g.name(c)}, made from it"
            )
    for i, _, norm in g.walk:
        if g.nodes[i] in leaves:
            assert norm == pytest.approx(
                float(np.linalg.norm(minivae.to_numpy(g.nodes[i].grad))), rel=1e-6
            )
    assert len(g.walk_text().splitlines()) == len(order) + 1


def test_walk_of_the_worked_example():
    x, y, u, v, f = worked_example()
    g = graph.capture(f, names={"x": x, "y": y, "u": u, "v": v, "f": f})
    text = g.backward()
    check_walk(g, [x, y])
    lines = text.splitlines()
    assert lines[1] == "   1. f (): gradient (), ||g|| = 1 -> v"
    assert lines[2] == "   2. v (): gradient (), ||g|| = 16 -> u, x"
    x_line = next(line for line in lines if ". x ()" in line)
    assert x_line.endswith("||g|| = 64 -> its .grad  [sum of 2 uses: u, v]")
    assert float(x.grad) == 64.0 and float(y.grad) == 32.0


def test_walk_reads_one_number_per_step(monkeypatch):
    reads = []
    real = backend.to_numpy
    monkeypatch.setattr(backend, "to_numpy", lambda a: reads.append(1) or real(a))
    if minivae.get_backend().name == "strict":  # float() of a device array is a read as well
        array_type = type(backend.asarray([0.0]))
        method = array_type.__float__
        monkeypatch.setattr(array_type, "__float__", lambda self: reads.append(1) or method(self))
    w = Tensor(backend.normal((3, 2), backend.dtype("float32")), requires_grad=True)
    x = Tensor(backend.normal((4, 3), backend.dtype("float32")))
    g = graph.capture(F.tanh(x @ w).sum())  # no 0-d constants: capturing reads nothing
    assert reads == []
    g.backward()
    assert len(reads) == len(g.walk) == 4  # sum, tanh, matmul, w


def random_op(op: str, a: Tensor, b: Tensor) -> Tensor:
    """One op of the random graphs, on (2, 3) tensors; split and unstack are ops with several
    outputs: the parts swapped, or one part used twice and the other not at all."""
    ops = {
        "add": lambda: a + b,
        "multiply": lambda: a * b,
        "subtract": lambda: a - b,
        "tanh": lambda: F.tanh(a),
        "split": lambda: F.concatenate(F.split(a, [1, 2], axis=-1)[::-1], axis=-1),
        "unstack": lambda: F.stack([F.unstack(a, axis=0)[0]] * 2, axis=0) * b,
    }
    return ops[op]()


@given(st.data())
def test_walk_of_random_graphs_is_a_reverse_topological_order(data):
    n_leaves = data.draw(st.integers(1, 3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    leaves = [
        Tensor(
            backend.asarray(rng.uniform(-1, 1, (2, 3)), dtype=backend.dtype("float64")),
            requires_grad=True,
        )
        for _ in range(n_leaves)
    ]
    made = list(leaves)
    for _ in range(data.draw(st.integers(1, 8))):  # each op picks its operands among all so far
        op = data.draw(st.sampled_from(["add", "multiply", "subtract", "tanh", "split", "unstack"]))
        a = made[data.draw(st.integers(0, len(made) - 1))]
        b = made[data.draw(st.integers(0, len(made) - 1))]
        made.append(random_op(op, a, b))
    loss = F.tanh(made[-1]).sum()  # tanh keeps every value in [-1, 1]
    g = graph.capture(loss)
    # exactly the tensors reachable from the loss, and one edge per operand
    reachable, stack = set(), [loss]
    while stack:
        t = stack.pop()
        if id(t) not in reachable:
            reachable.add(id(t))
            stack.extend(t.parents)
    nodes, edges = parse(g.to_dot(legend=False))
    assert len(nodes) == len(g.nodes) == len(reachable)
    assert len(edges) == sum(len(t.parents) for t in g.nodes)
    g.backward()
    check_walk(g, [t for t in leaves if id(t) in reachable])


def test_the_walk_joins_the_gradients_of_an_op_with_several_outputs():
    x = Tensor(backend.asarray(np.ones((2, 3))), requires_grad=True)
    a, b = F.split(x, [1, 2], axis=-1)
    g = graph.capture((a * 2).sum() + b.sum(), names={"a": a, "b": b, "x": x})
    (line,) = [s for s in g.backward().splitlines() if "joined" in s]
    # the split's node holds [2, 1, 1] in each row: ||g|| = sqrt(2 * (4 + 1 + 1))
    assert line.endswith(
        "split (2, 3): gradient (2, 3), ||g|| = 3.464 -> x  [joined from its outputs: a, b]"
    )
    check_walk(g, [x])


def test_walk_needs_a_backward_first():
    f = worked_example()[-1]
    with pytest.raises(RuntimeError, match="run Graph.backward"):
        graph.capture(f).walk_text()


def test_the_docs_show_the_walk_the_code_prints():
    text = (ROOT / "docs" / "autodiff.md").read_text()
    block = text[text.index("backward() from f:") :]
    block = block[: block.index("```")].rstrip("\n")
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    assert figures.worked_example()[1] == block


# --- rendering -------------------------------------------------------------------------------


def test_draw_writes_valid_svg_and_png(tmp_path):
    need_dot()
    x, _, _, v, f = worked_example()
    g = graph.capture(f, names={"x": x})
    f.backward()
    svg = Path(graph.Graph.draw(g, tmp_path / "f.svg", grads=True))
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert "x" in {t.text for t in root.iter() if t.tag.endswith("text")}
    png = tmp_path / "f.png"
    g.draw(png)
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 1000
    assert g._repr_mimebundle_()["image/svg+xml"].lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match=r"'f.pdf' must end in .svg or .png"):
        g.draw("f.pdf")
    assert graph.draw(v * 2, tmp_path / "g.svg") == str(tmp_path / "g.svg")  # the one-call form


def test_without_dot_the_error_is_one_line_saying_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no dot on PATH
    f = worked_example()[-1]
    g = graph.capture(f)
    with pytest.raises(graph.GraphvizNotFound) as e:
        g.draw(tmp_path / "f.svg")
    message = str(e.value)
    assert "\n" not in message and message.startswith(
        "graph.draw: the Graphviz program `dot` is not on PATH"
    )
    for how in (
        "apt-get install graphviz",
        "brew install graphviz",
        "conda install -c conda-forge graphviz",
    ):
        assert how in message
    assert not (tmp_path / "f.svg").exists()
    shown = g._repr_mimebundle_()  # Jupyter: the text, and how to install dot
    assert list(shown) == ["text/plain"] and "apt-get install graphviz" in shown["text/plain"]


@pytest.mark.backends("numpy")
def test_frey_graph_flag_writes_the_elbo_graph(data_dir, tmp_path):
    need_dot()
    run = [
        sys.executable,
        str(ROOT / "examples" / "frey.py"),
        "--limit",
        "20",
        "--epochs",
        "1",
        "--log-px-samples",
        "2",
        "--quiet",
        "--graph",
        "--out",
        str(tmp_path),
    ]
    env = {**os.environ, "MINIVAE_DATA": data_dir, "MPLBACKEND": "Agg"}
    done = subprocess.run(run, capture_output=True, text=True, check=False, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    texts = {
        t.text
        for t in ET.parse(tmp_path / "elbo_graph.svg").getroot().iter()
        if t.tag.endswith("text")
    }
    assert {
        "eps",
        "received no gradient",
        "encoder.layers.1.kernel",
        "z = mu + sigma * eps: the reparameterisation",
    } <= texts
    grads = [t for t in texts if t and t.startswith(".grad")]
    assert len(grads) == 8 and all("||g|| = " in t for t in grads)  # every weight's .grad
    # without dot: one line, exit 1, before the first epoch (no checkpoint)
    empty = tmp_path / "no_dot"
    empty.mkdir()
    run[-1] = str(tmp_path / "again")
    done = subprocess.run(
        run,
        capture_output=True,
        text=True,
        check=False,
        env={**env, "PATH": str(empty)},
        timeout=300,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(
        "frey.py: error: --graph: the Graphviz program `dot` is not on PATH"
    )
    assert not (tmp_path / "again" / "checkpoint.npz").exists()
