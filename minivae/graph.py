"""See the graph: the computation that made a tensor, and the walk backward() takes through it.

    with graph.layers() as calls:                    # optional: which layer made each op
        loss = vae.elbo(x)["loss"]
    g = graph.capture(loss, model=vae, layers=calls)  # before backward(), which frees the graph
    print(g.backward())                              # loss.backward(), printing each step
    g.draw("elbo.svg", grads=True)                   # and what every leaf received

Why capture first: ``backward()`` frees the graph behind it (each tensor's ``parents`` become
``()``), so memory stays flat in training. ``capture`` copies the structure (which tensor was
made from which) and keeps the tensors, so the picture can still be drawn after
``backward()``, now with each leaf's ``.grad``. A captured graph keeps its tensors' arrays
alive: draw it, then let it go.

Colours: blue ops lie on a gradient path (``requires_grad``); yellow leaves are parameters
(they receive ``.grad``); grey dashed boxes are data and constants, which no gradient reaches
(the noise ``eps`` of ``z = mu + sigma * eps`` is one). A 0-d constant (the 0.5 of
``0.5 * log_var``) is written inside the op that uses it: ``multiply(·, 0.5)``.

Reads from the device: shapes only, plus one read per 0-d constant (its value, for the
label) and, for gradients, one per norm (``||g||`` is summed on the device, one number
comes back). Graphviz's ``dot`` program renders the text; no Python package is needed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess

import numpy as np

from . import backend
from .files import atomic_write
from .nn.module import Module
from .tensor import Slots, Tensor, no_grad

INSTALL = (
    "the Graphviz program `dot` is not on PATH; install Graphviz: "
    "apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS), "
    "conda install -c conda-forge graphviz (conda)"
)
STYLE = {  # kind of node: (fill, border, text colour, style)
    "op": ("#dbe9f6", "#2b6cb0", "black", "rounded,filled"),
    "param": ("#fde68a", "#b7791f", "black", "filled"),
    "leaf": ("#fde68a", "#b7791f", "black", "filled"),  # needs a gradient, not a model's parameter
    "input": ("#f2f2f2", "#888888", "#444444", "dashed,filled"),
    "constant": ("#f2f2f2", "#888888", "#444444", "dashed,filled"),
    "layer": ("#dbe9f6", "#2b6cb0", "black", "filled"),
}
RED = "#d62728"
HEADER = [
    "digraph minivae {",
    "  rankdir=TB; nodesep=0.3; ranksep=0.4; newrank=true;",
    '  node [fontname="Helvetica", fontsize=11, shape=box, margin="0.12,0.05"];',
    '  edge [color="#333333", arrowsize=0.7];',
]
NO_GRADIENT_EDGE = ' [style=dashed, color="#999999"]'


class GraphvizNotFound(RuntimeError):
    """`dot` is not installed; the message says how to install it."""


def find_dot(who: str = "graph.draw") -> str:
    """The path of Graphviz's `dot`, or GraphvizNotFound (one line saying how to install it)."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizNotFound(f"{who}: {INSTALL}")
    return dot


@contextlib.contextmanager
def layers():
    """Inside ``with layers() as calls:`` every Module call is remembered (module, inputs,
    output), so that ``capture(..., layers=calls)`` can say which layer made each op.

    It is the hook summary() uses (``Module.call_log``): outside the block a call costs one
    ``is None`` test, as it always did.
    """
    previous, Module.call_log = Module.call_log, []
    try:
        yield Module.call_log
    finally:
        Module.call_log = previous


def capture(
    tensor: Tensor, model: Module | None = None, names: dict | None = None, layers=None
) -> Graph:
    """The structure of the graph that made `tensor`, copied so that it survives backward().

    model:  names the parameters (``encoder.layers.1.kernel``) and the layers.
    names:  {"x": x, "eps": eps, ...}: labels for particular tensors.
    layers: the calls recorded by ``with layers() as calls:`` around the forward pass.
    """
    return Graph(tensor, model, names, layers)


def to_dot(tensor: Tensor, model=None, names=None, layers=None, **options) -> str:
    """The Graphviz DOT text of the graph that made `tensor` (options: Graph.to_dot)."""
    return capture(tensor, model, names, layers).to_dot(**options)


def draw(tensor: Tensor, path, model=None, names=None, layers=None, **options) -> str:
    """Write the graph that made `tensor` to `path` (.svg or .png) with Graphviz's `dot`."""
    return capture(tensor, model, names, layers).draw(path, **options)


def elbo_graph(vae, x: Tensor, samples: int = 1, estimator: str = "analytic", seed: int = 0):
    """A VAE's -ELBO on the batch `x`, captured by layer: returns (graph, highlight).

    The noise eps is drawn on the host from `seed` (the backend's generator is left alone, so
    a training run is the same with or without its picture). x, eps, loss, nll, kl and the
    tensors of z = mu + sigma * eps are named; `highlight` marks the reparameterisation.
    Draw it, or run ``graph.backward()`` first and draw it with ``grads=True``.
    """
    with no_grad():
        draw_shape = (samples, *vae.encode(x).shape)  # (L, N, l)
    noise = np.random.default_rng(seed).standard_normal(draw_shape)
    eps = Tensor(backend.asarray(noise, dtype=x.dtype))
    with layers() as calls:
        parts = vae.elbo(x, samples=samples, estimator=estimator, eps=eps)
    g = capture(parts["loss"], model=vae, names={"x": x, "eps": eps, **parts}, layers=calls)
    try:
        return g, {"z = mu + sigma * eps: the reparameterisation": g.reparameterisation(eps)}
    except ValueError:  # a full-covariance q: eps enters reshaped, z = mu + L eps
        return g, {}


class Graph:
    """A captured graph: `nodes` in topological order (every tensor after its parents), and
    for each node the indices of its `parents` and its `children` (the ops using it, per use)."""

    def __init__(self, output, model=None, names=None, layers=None):
        if not isinstance(output, Tensor):
            raise TypeError(f"graph.capture: expected a Tensor, got {type(output).__name__}")
        if output.grad_fn is not None and not output.parents:
            raise ValueError(
                "graph.capture: backward() has already freed this tensor's graph; "
                "capture it before calling backward()"
            )
        # every tensor, constants too, each after its parents (first parents first: operand order)
        self.output = output
        self.nodes = output.topological_order(lambda t: reversed(t.parents))
        self.index = {id(t): i for i, t in enumerate(self.nodes)}
        self.parents = [tuple(self.index[id(p)] for p in t.parents) for t in self.nodes]
        self.children = [[] for _ in self.nodes]
        for i, ps in enumerate(self.parents):
            for p in ps:
                self.children[p].append(i)
        self.walk = None  # [(node, gradient shape, norm)] once Graph.backward() has run
        self.joined = set()  # the walk's nodes of ops with several outputs (split, unstack)
        self.names = {id(t): name for name, t in (names or {}).items()}
        modules = dict(model.named_modules()) if model is not None else {}
        self.module_names = {id(m): name for name, m in modules.items() if name}  # the model is ""
        self.module_types = {name: type(m).__name__ for name, m in modules.items()}
        params = dict(model.named_parameters()) if model is not None else {}
        self.param_names = {id(t): name for name, t in params.items()}
        calls = list(layers or [])
        fed = {id(t) for _, inputs, _ in calls for t in _tensors(inputs)}
        self.kinds = [_kind(t, self.param_names, fed) for t in self.nodes]
        # the module (by name) that made each op; a parameter sits in the layer holding it
        made_by = _attribute(calls, self.index)
        self.owner = {i: self.module_names.get(id(m)) for i, m in made_by.items()}
        for name, t in params.items():
            if id(t) in self.index:
                self.owner[self.index[id(t)]] = name.rpartition(".")[0] or None
        self.layers = {}  # layer name -> (the output of its last call, its parameters)
        for m, _, out in calls:
            if self.module_names.get(id(m)) and next(m.children(), None) is None:
                self.layers[self.module_names[id(m)]] = (out, list(m.named_parameters()))
        self.scalars = {
            i: float(backend.to_numpy(t.data))
            for i, t in enumerate(self.nodes)
            if self.kinds[i] == "constant" and t.ndim == 0 and id(t) not in self.names
        }

    def __repr__(self):
        ops = self.kinds.count("op")
        return f"Graph({ops} ops, {len(self.nodes) - ops} leaves, making {self.name(-1)})"

    def name(self, i: int) -> str:
        """Node i in words: its given name or parameter name, else "#i op"."""
        i %= len(self.nodes)
        t = self.nodes[i]
        return self.names.get(id(t)) or self.param_names.get(id(t)) or f"#{i} {t.op}"

    def reparameterisation(self, eps: Tensor) -> list[Tensor]:
        """Name the tensors of z = mu + sigma * eps around the noise `eps` (Normal.rsample's
        multiply and add, and sigma = exp(0.5 * log_var) where the VAE made it so); returns
        them, for ``to_dot(highlight={"z = mu + sigma * eps": g.reparameterisation(eps)})``."""
        e = self.index.get(id(eps))
        uses = self.children[e] if e is not None else []
        scaled = [c for c in uses if self.nodes[c].op == "multiply"]
        z = [c for c in self.children[scaled[0]] if self.nodes[c].op == "add"] if scaled else []
        if not z:
            raise ValueError("Graph.reparameterisation: eps does not feed z = mu + sigma * eps")
        named = {"eps": e, "sigma * eps": scaled[0], "z": z[0]}
        named["mu"] = next(p for p in self.parents[z[0]] if p != scaled[0])
        sigma = named["sigma"] = next(p for p in self.parents[scaled[0]] if p != e)
        if self.nodes[sigma].op == "exp":  # sigma = exp(log_sigma), log_sigma = 0.5 * log_var
            log_sigma = named["log_sigma"] = self.parents[sigma][0]
            rest = [p for p in self.parents[log_sigma] if p not in self.scalars]
            if self.nodes[log_sigma].op == "multiply" and len(rest) == 1:
                named["log_var"] = rest[0]
        for name, i in named.items():
            self.names.setdefault(id(self.nodes[i]), name)
        return [self.nodes[i] for i in named.values()]

    # --- the backward walk, as text ---------------------------------------------------------
    def backward(self, grad=None) -> str:
        """Run ``output.backward()``, recording each step of its walk; returns walk_text()."""
        xp, walk, self.joined = backend.xp(), [], set()

        def visit(t, g):  # the norm is summed on the device; one number comes back per step
            i = self.index[id(t)]
            if isinstance(g, Slots):  # an op with several outputs (split): one norm for them all
                self.joined.add(i)
                parts, shape = list(g.values()), t.shape
            else:
                parts, shape = [g], tuple(g.shape)
            norm = float(backend.to_numpy(xp.sqrt(sum(xp.sum(s * s) for s in parts))))
            walk.append((i, shape, norm))

        self.output.backward(grad, visit=visit)
        self.walk = walk
        return self.walk_text()

    def walk_text(self) -> str:
        """One line per step of backward(): the tensor reached, the gradient it now holds (the
        sum over its uses, when it has several; the gradients of its outputs side by side, for
        the node of an op with several) and where that goes on: through the op's backward to
        its parents, or into a leaf's ``.grad``."""
        if self.walk is None:
            raise RuntimeError("Graph.walk_text: no walk recorded yet; run Graph.backward() first")
        lines = [
            f"backward() from {self.name(len(self.nodes) - 1)}: {len(self.walk)} steps, "
            + "each tensor after all the tensors made from it"
        ]
        for step, (i, shape, norm) in enumerate(self.walk, 1):
            on = [self.name(p) for p in self.parents[i] if self.nodes[p].requires_grad]
            uses = [self.name(c) for c in self.children[i] if self.nodes[c].requires_grad]
            summed = f"  [sum of {len(uses)} uses: {', '.join(uses)}]" if len(uses) > 1 else ""
            if i in self.joined:
                summed = f"  [joined from its outputs: {', '.join(uses)}]"
            lines.append(
                f"{step:4d}. {self.name(i)} {_shape(self.nodes[i].shape)}: "
                f"gradient {_shape(shape)}, ||g|| = {norm:.4g} "
                f"-> {', '.join(on) if on else 'its .grad'}{summed}"
            )
        return "\n".join(lines)

    # --- the picture ------------------------------------------------------------------------
    def to_dot(
        self,
        grads: bool = False,
        collapse: bool = False,
        highlight: dict | None = None,
        legend: bool = True,
        title: str | None = None,
    ) -> str:
        """Graphviz DOT text: an edge from each tensor to each op that uses it, inputs on top.

        grads:     also write what each leaf received (``.grad``'s shape and norm, or "received
                   no gradient"), and each op's gradient if Graph.backward() recorded the walk.
        collapse:  draw each layer (a module with no modules inside) as one node.
        highlight: {label: tensors}: outline these in red, and box under `label` the ones no
                   layer holds (e.g. the reparameterisation z = mu + sigma * eps).
        legend:    a key to the colours.
        """
        marked = {
            self.index[id(t)]: label
            for label, ts in (highlight or {}).items()
            for t in ts
            if id(t) in self.index
        }
        layer_of = {i: name for i, name in self.owner.items() if collapse and name in self.layers}
        walked = {i: norm for i, _, norm in (self.walk or [])}
        ids = [
            f"layer_{_ident(layer_of[i])}" if i in layer_of else f"n{i}"
            for i in range(len(self.nodes))
        ]
        groups, drawn = {}, set()  # box (a module's name, ("highlight", label), or None) -> nodes
        for i in range(len(self.nodes)):
            if i in self.scalars or ids[i] in drawn:
                continue  # a 0-d constant is written inside its op's label; a layer is drawn once
            drawn.add(ids[i])
            if i in layer_of:
                box, line = self._box_around(layer_of[i]), self._layer_node(layer_of[i], grads)
            else:
                box = self.owner.get(i)
                if box is None and i in marked:
                    box = ("highlight", marked[i])
                line = self._node(i, grads, walked, i in marked)
            groups.setdefault(box, []).append(line)
        lines = list(HEADER)
        if title:
            lines.append(f'  labelloc=t; fontname="Helvetica"; fontsize=15; label="{_esc(title)}";')
        lines += self._boxes(groups)
        edges = set()
        for i, ps in enumerate(self.parents):
            for p in ps:  # one edge per use, except between two collapsed layers: one in all
                edge = (ids[p], ids[i])
                between_layers = p in layer_of or i in layer_of
                if p in self.scalars or edge[0] == edge[1] or (edge in edges and between_layers):
                    continue
                edges.add(edge)
                style = "" if self.nodes[p].requires_grad else NO_GRADIENT_EDGE
                lines.append(f"  {edge[0]} -> {edge[1]}{style};")
        return "\n".join(lines + (LEGEND if legend else []) + ["}"]) + "\n"

    def _node(self, i, grads, walked, marked) -> str:
        t, kind = self.nodes[i], self.kinds[i]
        given = self.names.get(id(t))
        if kind == "op":
            op = t.op
            if any(p in self.scalars for p in self.parents[i]):  # e.g. multiply(·, 0.5)
                op += (
                    "("
                    + ", ".join(
                        _number(self.scalars[p]) if p in self.scalars else "·"
                        for p in self.parents[i]
                    )
                    + ")"
                )
            text = [f"{given} = {op}" if given else op, _shape(t.shape)]
        elif kind == "param":
            text = [self.param_names[id(t)], _shape(t.shape)]
        else:
            made = "" if t.op == "leaf" else f", made by {t.op}"  # e.g. a reshape of data
            text = [
                given or {"input": "data", "constant": "constant", "leaf": "leaf"}[kind],
                _shape(t.shape) + made,
            ]
        if t.dtype != self.output.dtype:
            text[1] += " " + str(t.dtype).split(".")[-1]
        if grads:
            text.append(self._received(i, walked))
        elif kind in ("input", "constant"):
            text.append("no gradient path")
        extra = {"color": RED, "penwidth": 2.5} if marked else {}
        if t is self.output:
            extra["peripheries"] = 2
        return _node_line(f"n{i}", text, kind, **extra)

    def _received(self, i, walked) -> str:
        """What node i received from backward(): a leaf's .grad, an op's gradient in the walk."""
        t = self.nodes[i]
        if not t.requires_grad:
            return "received no gradient"
        if self.kinds[i] == "op":
            return f"gradient ||g|| = {walked[i]:.3g}" if i in walked else ""
        if t.grad is None:
            return ".grad is None: run backward()"
        return f".grad {_shape(t.grad.shape)}, ||g|| = {_norm(t.grad):.3g}"

    def _layer_node(self, name, grads) -> str:
        out, params = self.layers[name]
        text = [f"{name} {self.module_types[name]}"]
        if isinstance(out, Tensor):
            text.append(f"out {_shape(out.shape)}")
        for pname, p in params:
            norm = f", ||g|| = {_norm(p.grad):.3g}" if grads and p.grad is not None else ""
            text.append(f"{pname} {_shape(p.shape)}{norm}")
        return _node_line(f"layer_{_ident(name)}", text, "layer", penwidth=1.5)

    def _box_around(self, name):
        """The nearest module around module `name` (encoder around encoder.layers.1), or None."""
        while "." in name:
            name = name.rpartition(".")[0]
            if name in self.module_types:
                return name
        return None

    def _boxes(self, groups) -> list[str]:
        """The node lines, each module's inside a labelled box, nested in the boxes around it."""
        out = ["  " + line for line in groups.get(None, [])]
        for k, key in enumerate(key for key in groups if isinstance(key, tuple)):
            out += [
                f"  subgraph cluster_highlight_{k} {{",
                f'    label="{_esc(key[1])}"; fontname="Helvetica-Bold"; fontsize=12;',
                f'    fontcolor="{RED}"; labeljust=l;',
                f'    style="rounded,dashed"; color="{RED}"; penwidth=1.5;',
                *("    " + line for line in groups[key]),
                "  }",
            ]
        named = {key for key in groups if isinstance(key, str)}
        for name in list(named):  # and every module around one of them
            while (name := self._box_around(name)) is not None:
                named.add(name)

        def emit(name, pad):
            out.append(f"{pad}subgraph cluster_{_ident(name)} {{")
            out.append(f'{pad}  label="{_esc(name)} {self.module_types[name]}"; labeljust=l;')
            out.append(
                f'{pad}  fontname="Helvetica"; fontsize=11; style="rounded"; ' + 'color="#7f9cc0";'
            )
            out.extend(f"{pad}  {line}" for line in groups.get(name, []))
            for inner in sorted(n for n in named if self._box_around(n) == name):
                emit(inner, pad + "  ")
            out.append(f"{pad}}}")

        for name in sorted(n for n in named if self._box_around(n) is None):
            emit(name, "  ")
        return out

    # --- rendering --------------------------------------------------------------------------
    def render(self, fmt: str = "svg", **options) -> bytes:
        """The picture as bytes, "svg" or "png", drawn by Graphviz's `dot` (options: to_dot)."""
        if fmt not in ("svg", "png"):
            raise ValueError(f"Graph.render: format {fmt!r} is not one of 'svg', 'png'")
        done = subprocess.run(
            [find_dot(), f"-T{fmt}"],
            input=self.to_dot(**options).encode(),
            capture_output=True,
            check=False,
        )  # dot's own message is raised below
        if done.returncode != 0:
            message = " ".join(done.stderr.decode(errors="replace").split())
            raise RuntimeError(f"graph.draw: dot failed (exit {done.returncode}): {message}")
        return done.stdout

    def draw(self, path, **options) -> str:
        """Write the picture to `path`, .svg or .png by its suffix, atomically; returns the path."""
        path = str(path)
        fmt = path.rpartition(".")[2].lower()
        if fmt not in ("svg", "png"):
            raise ValueError(f"graph.draw: {path!r} must end in .svg or .png")
        data = self.render(fmt, **options)
        with atomic_write(path) as f:
            f.write(data)
        return path

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Jupyter shows the graph inline (SVG); without `dot`, the text and how to install it."""
        try:
            return {"image/svg+xml": self.render("svg").decode()}
        except GraphvizNotFound:
            return {"text/plain": f"{self!r}\n(to see it: {INSTALL})"}


# --- helpers -------------------------------------------------------------------------------


def _attribute(calls, index) -> dict:
    """{node: module} for every op made inside a module's call, the innermost call winning.

    A call's ops are those met walking back from its output until its inputs (or leaves).
    Calls finish inner first, so a layer claims its ops before the Sequential around it does.
    (A tensor a module reached without taking it as an input, e.g. through a closure, and
    that no earlier call claimed, would be claimed too.)
    """
    owner = {}
    for module, inputs, out in calls:
        stop = {id(t) for t in _tensors(inputs)}
        stack, seen = list(_tensors(out)), set()
        while stack:
            t = stack.pop()
            if id(t) in stop or id(t) in seen or not t.parents or id(t) not in index:
                continue
            seen.add(id(t))
            owner.setdefault(index[id(t)], module)
            stack.extend(t.parents)
    return owner


def _tensors(x):
    """The Tensors in a call's arguments or output (nested in tuples, lists and dicts)."""
    if isinstance(x, Tensor):
        yield x
    elif isinstance(x, (tuple, list, dict)):
        for item in x.values() if isinstance(x, dict) else x:
            yield from _tensors(item)


def _kind(t, param_names, fed) -> str:
    if t.parents:
        return "op"
    if t.requires_grad:
        return "param" if id(t) in param_names else "leaf"
    return "input" if id(t) in fed else "constant"


def _node_line(node_id, text, kind, **extra) -> str:
    fill, border, font, style = STYLE[kind]
    attrs = {"style": style, "fillcolor": fill, "color": border, "fontcolor": font, **extra}
    label = _esc("\n".join(line for line in text if line))
    return f'{node_id} [label="{label}"' + "".join(f', {k}="{v}"' for k, v in attrs.items()) + "];"


def _norm(a) -> float:
    xp = backend.xp()
    return float(backend.to_numpy(xp.sqrt(xp.sum(a * a))))


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _number(v: float) -> str:
    return f"{v:.4g}"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


LEGEND = [
    "  subgraph cluster_legend {",
    '    label="key"; fontname="Helvetica"; fontsize=11; style="rounded"; color="#bbbbbb";',
    *(
        "    " + _node_line(f"legend_{k}", [text], kind, fontsize=10)
        for k, (text, kind) in enumerate(
            [
                ("op on a gradient path", "op"),
                ("parameter: receives .grad", "param"),
                ("data or constant: no gradient", "constant"),
            ]
        )
    ),
    "    legend_0 -> legend_1 -> legend_2 [style=invis];",
    "  }",
]
