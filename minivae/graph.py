"""See the graph: the computation that made a tensor, and the walk backward() takes through it.

    with graph.layers() as calls:           # optional: remember which layer made each op
        loss = vae.elbo(x)["loss"]
    g = graph.capture(loss, model=vae, layers=calls)   # before backward(), which frees the graph
    print(g.backward())                     # loss.backward(), printing each step of its walk
    g.draw("elbo.svg", grads=True)          # then what every leaf received

Why capture first: ``backward()`` frees the graph behind it (each tensor's ``parents`` become
``()``), so memory stays flat in training. ``capture`` copies the structure (which tensor was
made from which) and keeps the tensors, so the same picture can be drawn after ``backward()``,
now with each leaf's ``.grad``. A captured graph holds its tensors' arrays alive: draw it, then
let it go.

Colours: blue ops lie on a gradient path (``requires_grad``); yellow leaves are parameters
(they receive ``.grad``); grey dashed boxes are data and constants (no gradient reaches them:
the noise ``eps`` of ``z = mu + sigma * eps`` is one). 0-d constants (the 0.5 of
``0.5 * log_var``) are written inside the op that uses them instead of as boxes of their own.

Reads from the device: the view reads shapes only, except one read per 0-d constant (to print
its value) and, when gradients are shown, one read per gradient norm (``||g||``, a sum on the
device, then one number to the host). ``dot`` (Graphviz) renders the text; no Python package
is needed.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess

import numpy as np

from . import backend
from .files import atomic_write
from .nn.module import Module
from .tensor import Tensor, no_grad

INSTALL = ("the Graphviz program `dot` is not on PATH; install Graphviz: "
           "apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS), "
           "conda install -c conda-forge graphviz (conda)")

# (fill, border, font colour, border style) of each kind of node
STYLE = {
    "op": ("#dbe9f6", "#2b6cb0", "black", "rounded,filled"),
    "param": ("#fde68a", "#b7791f", "black", "filled"),
    "input": ("#f2f2f2", "#888888", "#444444", "dashed,filled"),
    "constant": ("#f2f2f2", "#888888", "#444444", "dashed,filled"),
    "leaf": ("#fde68a", "#b7791f", "black", "filled"),  # needs a gradient, not a model parameter
    "layer": ("#dbe9f6", "#2b6cb0", "black", "filled"),
}
HIGHLIGHT = "#d62728"


class GraphvizNotFound(RuntimeError):
    """`dot` is not installed; the message says how to install it."""


@contextlib.contextmanager
def layers():
    """Inside ``with layers() as calls:`` every Module call is remembered (module, inputs, output),
    so ``capture(..., layers=calls)`` can group each op under the layer that made it.

    It uses the hook ``summary()`` uses (``Module._calls``): outside the block a call costs
    one ``is None`` test, as it always did.
    """
    previous, Module._calls = Module._calls, []
    try:
        yield Module._calls
    finally:
        Module._calls = previous


def capture(tensor: Tensor, model: Module | None = None, names: dict | None = None,
            layers=None) -> Graph:
    """The structure of the graph that made `tensor`, copied so that it survives ``backward()``.

    model:  names the parameters (``encoder.layers.1.kernel``) and the layers.
    names:  {"x": x, "eps": eps, ...}: labels for particular tensors.
    layers: the calls recorded by ``with layers() as calls:`` around the forward pass.
    """
    return Graph(tensor, model, names, layers)


def to_dot(tensor: Tensor, model=None, names=None, layers=None, **options) -> str:
    """The Graphviz DOT text of the graph that made `tensor` (see Graph.to_dot for options)."""
    return capture(tensor, model, names, layers).to_dot(**options)


def draw(tensor: Tensor, path, model=None, names=None, layers=None, **options) -> str:
    """Write the graph that made `tensor` to `path` (.svg or .png) with Graphviz's `dot`."""
    return capture(tensor, model, names, layers).draw(path, **options)



def elbo_graph(vae, x: Tensor, samples: int = 1, estimator: str = "analytic", seed: int = 0):
    """A VAE's -ELBO on the batch `x`, captured with its layers: returns (graph, highlight).

    The noise eps is drawn on the host from `seed` (the backend's generator is left alone, so a
    training run is the same with or without its picture) and named, as are x, loss, nll, kl
    and the tensors of z = mu + sigma * eps; `highlight` marks the reparameterisation.
    Draw it, or run ``graph.backward()`` first and draw it with ``grads=True``.
    """
    with no_grad():
        latent = vae.encode(x).shape  # (N, l): the shape of one draw of z
    eps = Tensor(backend.asarray(np.random.default_rng(seed).standard_normal((samples, *latent)),
                                 dtype=x.dtype))
    with layers() as calls:
        parts = vae.elbo(x, samples=samples, estimator=estimator, eps=eps)
    g = capture(parts["loss"], model=vae, names={"x": x, "eps": eps, **parts}, layers=calls)
    return g, {"z = mu + sigma * eps: the reparameterisation": g.reparameterisation(eps)}


class Graph:
    """A captured graph: `nodes` in topological order (every tensor after its parents), and for
    each node the indices of its `parents` and `children` (the ops that use it, once per use)."""

    def __init__(self, output, model=None, names=None, layers=None):
        if not isinstance(output, Tensor):
            raise TypeError(f"graph.capture: expected a Tensor, got {type(output).__name__}")
        if output.grad_fn is not None and not output.parents:
            raise ValueError("graph.capture: backward() has already freed this tensor's graph; "
                             "capture it before calling backward()")
        self.output, self.nodes = output, _all_nodes(output)
        index = self.index = {id(t): i for i, t in enumerate(self.nodes)}
        self.parents = [tuple(index[id(p)] for p in t.parents) for t in self.nodes]
        self.children = [[] for _ in self.nodes]
        for i, ps in enumerate(self.parents):
            for p in ps:
                self.children[p].append(i)
        self.walk = None  # [(node, gradient shape, norm)], once Graph.backward() has run
        self.names = {id(t): name for name, t in (names or {}).items()}
        modules = dict(model.named_modules()) if model is not None else {}
        self.module_names = {id(m): name for name, m in modules.items() if name}  # the model: ""
        self.module_types = {name: type(m).__name__ for name, m in modules.items()}
        params = dict(model.named_parameters()) if model is not None else {}
        self.param_names = {id(t): name for name, t in params.items()}
        calls = list(layers or [])
        fed = {id(t) for _, inputs, _ in calls for t in _tensors(inputs)}
        self.kinds = [_kind(t, self.param_names, fed) for t in self.nodes]
        # which layer made each op (its module's name), and each parameter sits in its layer
        self.owner = {i: self.module_names.get(id(m)) for i, m in _attribute(calls, index).items()}
        for name, t in params.items():
            if id(t) in index:
                self.owner[index[id(t)]] = name.rpartition(".")[0] or None
        self.layers = {}  # name -> (the output of its last call, its parameters) for each layer
        for m, _, out in calls:
            if self.module_names.get(id(m)) and next(m.children(), None) is None:
                self.layers[self.module_names[id(m)]] = (out, list(m.named_parameters()))
        # the value of each 0-d constant (one read each), printed inside the op that uses it
        self.scalars = {i: float(backend.to_numpy(t.data)) for i, t in enumerate(self.nodes)
                        if self.kinds[i] == "constant" and t.ndim == 0 and id(t) not in self.names}

    def __repr__(self):
        ops = self.kinds.count("op")
        return f"Graph({ops} ops and {len(self.nodes) - ops} leaves making {self.output.op} {_shape(self.output.shape)})"

    def name(self, i: int) -> str:
        """Node i in words: its given name or parameter name, else "#i op"."""
        t = self.nodes[i]
        return self.names.get(id(t)) or self.param_names.get(id(t)) or f"#{i} {t.op}"

    def reparameterisation(self, eps: Tensor) -> list[Tensor]:
        """Name the tensors of z = mu + sigma * eps around the noise `eps` (Normal.rsample's two
        ops, and sigma = exp(0.5 * log_var) when the VAE made it so) and return them, for
        ``to_dot(highlight={"z = mu + sigma * eps": g.reparameterisation(eps)})``."""
        if id(eps) not in self.index:
            raise ValueError("Graph.reparameterisation: eps is not in this graph")
        e = self.index[id(eps)]
        scaled = [c for c in self.children[e] if self.nodes[c].op == "multiply"]
        z = [c for c in self.children[scaled[0]] if self.nodes[c].op == "add"] if scaled else []
        if not z:
            raise ValueError("Graph.reparameterisation: eps does not feed z = mu + sigma * eps here")
        named = {"eps": e, "sigma * eps": scaled[0], "z": z[0]}
        named["mu"] = next(p for p in self.parents[z[0]] if p != scaled[0])
        sigma = named["sigma"] = next(p for p in self.parents[scaled[0]] if p != e)
        if self.nodes[sigma].op == "exp":  # sigma = exp(log_sigma), log_sigma = 0.5 * log_var
            log_sigma = named["log_sigma"] = self.parents[sigma][0]
            halves = [p for p in self.parents[log_sigma] if p not in self.scalars]
            if self.nodes[log_sigma].op == "multiply" and len(halves) == 1:
                named["log_var"] = halves[0]
        for name, i in named.items():
            self.names.setdefault(id(self.nodes[i]), name)
        return [self.nodes[i] for i in named.values()]

    # --- the backward walk, as text ------------------------------------------------------
    def backward(self, grad=None) -> str:
        """Run ``output.backward()``, recording each step of its walk; returns walk_text()."""
        xp, walk = backend.xp(), []

        def visit(t, g):  # the norm is summed on the device; one number comes back per step
            walk.append((self.index[id(t)], tuple(g.shape), float(backend.to_numpy(xp.sqrt(xp.sum(g * g))))))

        self.output.backward(grad, visit=visit)
        self.walk = walk
        return self.walk_text()

    def walk_text(self) -> str:
        """One line per step of backward(): the tensor reached, the gradient it now holds
        (shape and norm: the sum over its uses, when it has several), and where it goes on:
        to its parents through the op's backward, or into a leaf's ``.grad``."""
        if self.walk is None:
            raise RuntimeError("Graph.walk_text: no walk recorded yet; run Graph.backward() first")
        lines = [f"backward() from {self.name(len(self.nodes) - 1)}: {len(self.walk)} steps in reverse "
                 + "topological order (each tensor after every tensor made from it)"]
        for step, (i, shape, norm) in enumerate(self.walk, 1):
            uses = [c for c in self.children[i] if self.nodes[c].requires_grad]
            if self.kinds[i] == "op":
                onward = "-> " + ", ".join(self.name(p) for p in self.parents[i] if self.nodes[p].requires_grad)
            else:
                onward = "-> its .grad"
            summed = f"  [sum of {len(uses)} uses: {', '.join(self.name(c) for c in uses)}]" if len(uses) > 1 else ""
            lines.append(f"{step:4d}. {self.name(i)} {_shape(self.nodes[i].shape)}: gradient {_shape(shape)}, "
                         f"||g|| = {norm:.4g} {onward}{summed}")
        return "\n".join(lines)

    # --- the picture ---------------------------------------------------------------------
    def to_dot(self, grads: bool = False, collapse: bool = False, highlight: dict | None = None,
               legend: bool = True, title: str | None = None) -> str:
        """Graphviz DOT text: an edge from each tensor to each op that uses it, inputs at the top.

        grads:     also write what each leaf received (``.grad``'s shape and norm, or "received
                   no gradient"), and each op's gradient when Graph.backward() recorded the walk.
        collapse:  draw each layer (a module with no modules inside) as one node.
        highlight: {label: tensors}: outline these in red, and box the ones no layer holds
                   under `label` (e.g. the reparameterisation z = mu + sigma * eps).
        legend:    a key to the colours.
        """
        marked = {self.index[id(t)]: label for label, ts in (highlight or {}).items()
                  for t in ts if id(t) in self.index}
        collapsed = {i: n for i, n in self.owner.items() if collapse and n in self.layers}
        walked = {i: norm for i, _, norm in (self.walk or [])}

        def node_id(i):
            return f"layer_{_ident(collapsed[i])}" if i in collapsed else f"n{i}"

        groups = {}  # the module (by name) whose box a node sits in; None: no box
        for i in range(len(self.nodes)):
            if i in self.scalars:
                continue  # written inside the label of the op that uses it
            if i in collapsed:
                if node_id(i) not in {line.split()[0] for ls in groups.values() for line in ls}:
                    groups.setdefault(self._box_around(collapsed[i]), []).append(self._layer_node(collapsed[i], grads))
            elif i in marked and self.owner.get(i) is None:
                groups.setdefault(("highlight", marked[i]), []).append(self._node(i, grads, walked, True))
            else:
                groups.setdefault(self.owner.get(i), []).append(self._node(i, grads, walked, i in marked))
        lines = ["digraph minivae {",
                 "  rankdir=TB; nodesep=0.3; ranksep=0.4; newrank=true;",
                 '  node [fontname="Helvetica", fontsize=11, shape=box, margin="0.12,0.05"];',
                 '  edge [color="#333333", arrowsize=0.7];']
        if title:
            lines.append(f'  labelloc=t; fontname="Helvetica"; fontsize=15; label="{_esc(title)}";')
        lines += self._boxes(groups)
        edges = set()
        for i, ps in enumerate(self.parents):
            for p in ps:
                a, b = node_id(p), node_id(i)
                if p in self.scalars or a == b or ((a, b) in edges and (p in collapsed or i in collapsed)):
                    continue  # a scalar, inside one layer, or the same two layers joined again
                edges.add((a, b))
                style = "" if self.nodes[p].requires_grad else ' [style=dashed, color="#999999"]'
                lines.append(f"  {a} -> {b}{style};")
        if legend:
            lines += LEGEND
        return "\n".join(lines + ["}"]) + "\n"

    def _node(self, i, grads, walked, marked) -> str:
        t, kind = self.nodes[i], self.kinds[i]
        given = self.names.get(id(t))
        if kind == "op":
            op = t.op
            if any(p in self.scalars for p in self.parents[i]):  # e.g. multiply(0.5, ·), subtract(·, 1)
                op += "(" + ", ".join(_number(self.scalars[p]) if p in self.scalars else "·"
                                      for p in self.parents[i]) + ")"
            text = [(f"{given} = " if given else "") + op, _shape(t.shape)]
        elif kind == "param":
            text = [self.param_names[id(t)], _shape(t.shape)]
        else:
            what = {"input": "data", "constant": "constant", "leaf": "leaf"}[kind]
            text = [given or what, _shape(t.shape) + ("" if t.op == "leaf" else f", made by {t.op}")]
        if t.dtype != self.output.dtype:
            text[1] += " " + str(t.dtype).split(".")[-1]
        if kind in ("input", "constant") and not grads:
            text.append("no gradient path")
        if grads:
            text.append(self._received(i, walked))
        fill, border, font, style = STYLE[kind]
        extra = f', color="{HIGHLIGHT}", penwidth=2.5' if marked else f', color="{border}"'
        if t is self.output:
            extra += ", peripheries=2"
        return (f'n{i} [label="{_esc(chr(10).join(s for s in text if s))}", style="{style}", '
                f'fillcolor="{fill}", fontcolor="{font}"{extra}];')

    def _received(self, i, walked) -> str:
        """What node i received from backward(): for a leaf its .grad, for an op the walk's norm."""
        t = self.nodes[i]
        if not t.requires_grad:
            return "received no gradient"
        if self.kinds[i] != "op":
            if t.grad is None:
                return ".grad is None: run backward()"
            return f".grad {_shape(t.grad.shape)}, ||g|| = {_norm(t.grad):.3g}"
        return f"gradient ||g|| = {walked[i]:.3g}" if i in walked else ""

    def _layer_node(self, name, grads) -> str:
        out, params = self.layers[name]
        text = [f"{name} {self.module_types[name]}"]
        if isinstance(out, Tensor):
            text.append(f"out {_shape(out.shape)}")
        for pname, p in params:
            norm = f", ||g|| = {_norm(p.grad):.3g}" if grads and p.grad is not None else ""
            text.append(f"{pname} {_shape(p.shape)}{norm}")
        fill, border, font, style = STYLE["layer"]
        return (f'layer_{_ident(name)} [label="{_esc(chr(10).join(text))}", style="{style}", '
                f'fillcolor="{fill}", color="{border}", fontcolor="{font}", penwidth=1.5];')

    def _box_around(self, name):
        """The nearest module around module `name` (encoder around encoder.layers.1), or None."""
        while "." in name:
            name = name.rpartition(".")[0]
            if name in self.module_types:
                return name
        return None

    def _boxes(self, groups) -> list[str]:
        """The node lines, each module's inside a labelled box nested in the boxes around it."""
        out = ["  " + line for line in groups.get(None, [])]
        for k, key in enumerate(key for key in groups if isinstance(key, tuple)):
            out += [f"  subgraph cluster_highlight_{k} {{",
                    f'    label="{_esc(key[1])}"; fontname="Helvetica-Bold"; fontsize=12; '
                    + f'fontcolor="{HIGHLIGHT}"; style="rounded,dashed"; color="{HIGHLIGHT}"; penwidth=1.5;',
                    *("    " + line for line in groups[key]), "  }"]
        named = {key for key in groups if isinstance(key, str)}
        for name in list(named):  # and every module around one that has nodes
            while (name := self._box_around(name)) is not None:
                named.add(name)

        def emit(name, depth):
            pad = "  " * depth
            out.append(f"{pad}subgraph cluster_{_ident(name)} {{")
            out.append(f'{pad}  label="{_esc(name + " " + self.module_types[name])}"; fontname="Helvetica"; '
                       'fontsize=11; labeljust=l; style="rounded"; color="#7f9cc0";')
            out.extend(f"{pad}  {line}" for line in groups.get(name, []))
            for inner in sorted(n for n in named if self._box_around(n) == name):
                emit(inner, depth + 1)
            out.append(f"{pad}}}")

        for name in sorted(n for n in named if self._box_around(n) is None):
            emit(name, 1)
        return out

    # --- rendering -----------------------------------------------------------------------
    def render(self, fmt: str = "svg", **options) -> bytes:
        """The picture as bytes ("svg" or "png"), drawn by Graphviz's `dot`."""
        if fmt not in ("svg", "png"):
            raise ValueError(f"Graph.render: format {fmt!r} is not one of 'svg', 'png'")
        dot = shutil.which("dot")
        if dot is None:
            raise GraphvizNotFound(f"graph.draw: {INSTALL}")
        done = subprocess.run([dot, f"-T{fmt}"], input=self.to_dot(**options).encode(), capture_output=True,
                              check=False)  # dot's own message is raised below
        if done.returncode != 0:
            message = " ".join(done.stderr.decode(errors="replace").split())
            raise RuntimeError(f"graph.draw: dot failed (exit {done.returncode}): {message}")
        return done.stdout

    def draw(self, path, **options) -> str:
        """Write the picture to `path`; .svg or .png (by its suffix). Returns the path."""
        path = str(path)
        fmt = path.rpartition(".")[2].lower()
        if fmt not in ("svg", "png"):
            raise ValueError(f"graph.draw: {path!r} must end in .svg or .png")
        data = self.render(fmt, **options)
        with atomic_write(path) as f:
            f.write(data)
        return path

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Jupyter shows the graph inline (as SVG); without `dot`, the text and how to install it."""
        try:
            return {"image/svg+xml": self.render("svg").decode()}
        except GraphvizNotFound:
            return {"text/plain": f"{self!r}\n(to see it: {INSTALL})"}


LEGEND = [
    "  subgraph cluster_legend {",
    '    label="key"; fontname="Helvetica"; fontsize=11; style="rounded"; color="#bbbbbb";',
    *(f'    legend_{k} [label="{text}", style="{s}", fillcolor="{f}", color="{c}", fontcolor="{fc}", fontsize=10];'
      for k, (text, (f, c, fc, s)) in enumerate([
          ("op on a gradient path", STYLE["op"]),
          ("parameter: receives .grad", STYLE["param"]),
          ("data or constant: no gradient", STYLE["constant"])])),
    "    legend_0 -> legend_1 -> legend_2 [style=invis];",
    "  }",
]


# --- helpers ---------------------------------------------------------------------------


def _all_nodes(output) -> list[Tensor]:
    """Every tensor behind `output`, constants included, each after its parents
    (the depth-first post-order of Tensor._topological_order, over every parent)."""
    order, seen, stack = [], set(), [(output, False)]
    while stack:
        t, parents_done = stack.pop()
        if parents_done:
            order.append(t)
        elif id(t) not in seen:
            seen.add(id(t))
            stack.append((t, True))
            stack.extend((p, False) for p in reversed(t.parents))
    return order


def _attribute(calls, index) -> dict:
    """{node index: module} for every op made inside a module's call, the innermost call winning.

    A call's ops are those reached walking back from its output until its inputs (or leaves):
    calls finish inner first, so a layer claims its ops before the Sequential around it.
    (An op that reaches a tensor made outside the call without it being an input, through a
    closure, would be claimed as well.)
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
    """The Tensors in a call's arguments or output (nested tuples, lists and dicts)."""
    if isinstance(x, Tensor):
        yield x
    elif isinstance(x, (tuple, list)):
        for item in x:
            yield from _tensors(item)
    elif isinstance(x, dict):
        for item in x.values():
            yield from _tensors(item)


def _kind(t, param_names, fed) -> str:
    if t.parents:
        return "op"
    if t.requires_grad:
        return "param" if id(t) in param_names else "leaf"
    return "input" if id(t) in fed else "constant"


def _is_layer(m) -> bool:
    return next(m.children(), None) is None


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
