"""The learner docs (docs/*.md) stay true to the code.

* Every relative markdown link resolves: the file exists, a ``#L10-L20`` range lies
  inside it, and the link text pins what the range must show:
  - ``[`Class.method`](../minivae/x.py#L10-L20)``: that definition (found with ``ast``)
    starts on line 10 and ends on or after line 20, so a definition that moved fails;
  - ``[`any code`](../minivae/x.py#L12)``: that code appears in the linked lines.
  A line range with any other link text is refused (nothing would catch it going stale).
* Inline references such as ``minivae.vae.VAE`` import, and repository paths in
  backticks exist; ``path.py:123`` references lie inside their file.
* Every ```python block runs on the numpy backend in a fresh namespace (blocks with
  ``>>>`` run as doctests, their printed output checked); ```python no-run is skipped.
* Every ``python <script> --flags`` command in a ```bash block names a script that
  exists and flags it defines (examples are parsed with their own ``parse_args``).
* docs/README.md's line counts are within 10% of the files', and it lists every file.
* The figures are made by docs/figures.py, and the PNGs under docs/ are small.
"""

import ast
import doctest
import importlib
import importlib.util
import re
import shlex
import textwrap
from pathlib import Path

import pytest

import minivae

# the docs check text and run snippets: one backend is enough
pytestmark = pytest.mark.backends("numpy")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]  # the README links into docs/
MAX_PNG_BYTES = 200_000
LINE_COUNT_SLACK = 0.10

# (indented in a list too)
FENCE = re.compile(r"^[ \t]*```([^\n]*)\n(.*?)^[ \t]*```\s*$", re.S | re.M)
LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
LINES = re.compile(r"^L(\d+)(?:-L(\d+))?$")
DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
PATH_LINE = re.compile(
    r"(?<![\w/])((?:minivae|examples|benchmarks|tests|docs)/[\w/]+\.py):(\d+)(?:-(\d+))?"
)
REPO_PATH = re.compile(r"^(?:minivae|examples|benchmarks|tests|docs)/[\w/.-]+\.\w+$")


def prose(page: Path) -> str:
    """The page with its fenced code blocks blanked out (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), page.read_text())


def code_blocks(lang: str):
    """(page, line, info, code) for every fenced block whose info string starts with `lang`."""
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            info = m.group(1).strip()
            if info.split(" ")[0] == lang:
                yield page, text[: m.start()].count("\n") + 1, info, textwrap.dedent(m.group(2))


def links():
    for page in PAGES:
        for n, line in enumerate(prose(page).splitlines(), 1):
            for m in LINK.finditer(line):
                yield pytest.param(page, m.group(1), m.group(2), id=f"{page.name}:{n}:{m.group(2)}")


# --- links ------------------------------------------------------------------------


def definition(tree: ast.Module, dotted: str):
    """The def/class (or module-level assignment) named by `dotted`, e.g. "VAE.elbo" or
    "conv2d.backward" (a function defined inside conv2d); None if there is none."""
    body, node = tree.body, None
    for name in dotted.split("."):
        node = next((n for n in body if _defines(n, name)), None)
        if node is None:
            return None
        body = getattr(node, "body", [])
    return node


def _defines(node, name: str) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name == name
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(isinstance(t, ast.Name) and t.id == name for t in targets)
    return False


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("page, text, target", list(links()))
def test_link_resolves(page, text, target):
    if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
        return
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    assert file.exists(), f"{page.name}: link [{text}]({target}): {file} does not exist"
    if not anchor:
        return
    m = LINES.match(anchor)
    if file.suffix == ".md":
        assert m is None, (
            f"{page.name}: [{text}]({target}): link to a heading, not to lines, of a page"
        )
        assert anchor in headings(file), (
            f"{page.name}: [{text}]({target}): {file.name} has no heading #{anchor}"
        )
        return
    assert m, (
        f"{page.name}: [{text}]({target}): an anchor into {file.name} must be #L<n> or #L<n>-L<m>"
    )
    lines = file.read_text().splitlines()
    start, end = int(m.group(1)), int(m.group(2) or m.group(1))
    where = f"{page.name}: [{text}]({target})"
    assert 1 <= start <= end <= len(lines), (
        f"{where}: lines {start}-{end} outside {file.name} ({len(lines)} lines)"
    )
    assert text.startswith("`") and text.endswith("`"), (
        f"{where}: a line range needs a checkable link text: `name` (a definition) or `code` "
        "(text in those lines)"
    )
    code = text.strip("`")
    if (
        file.suffix == ".py"
        and DOTTED.match(code)
        and (node := definition(ast.parse(file.read_text()), code))
    ):
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        assert start == first and end <= node.end_lineno, (
            f"{where}: {code} is defined at lines {first}-{node.end_lineno} of {file.name}; "
            f"the link must start at {first} and end by {node.end_lineno}"
        )
    else:
        shown = squash("\n".join(lines[start - 1 : end]))
        assert squash(code) in shown, (
            f"{where}: `{code}` is not in lines {start}-{end} of {file.name}: {shown[:300]!r}"
        )


def headings(page: Path) -> set:
    """GitHub's anchors for the headings of a page."""
    slugs = set()
    for line in prose(page).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return slugs


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_inline_references_resolve(page):
    text = prose(page)
    for m in PATH_LINE.finditer(text):  # path.py:123 or path.py:10-20
        lines = (
            len((ROOT / m.group(1)).read_text().splitlines()) if (ROOT / m.group(1)).exists() else 0
        )
        assert lines, f"{page.name}: {m.group(0)}: no such file"
        assert int(m.group(2)) <= int(m.group(3) or m.group(2)) <= lines, (
            f"{page.name}: {m.group(0)} is past the end ({lines} lines)"
        )
    for span in re.findall(r"`([^`\n]+)`", text):
        span = span.removesuffix("()")
        if span.startswith("minivae.") and DOTTED.match(span):
            assert resolve(span) is not None, (
                f"{page.name}: `{span}` does not name anything in minivae"
            )
        elif REPO_PATH.match(span):
            assert (ROOT / span).exists(), f"{page.name}: `{span}` does not exist in the repository"


def resolve(dotted: str):
    """The object `dotted` names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


# --- code blocks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "page, line, code",
    [
        pytest.param(p, n, c, id=f"{p.name}:{n}")
        for p, n, info, c in code_blocks("python")
        if info == "python"
    ],
)
def test_python_block_runs(page, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    minivae.seed(0)
    name = f"{page.name}:{line}"
    if ">>>" in code:
        test = doctest.DocTestParser().get_doctest(code, {}, name, str(page), line)
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        report = []
        runner.run(test, out=report.append)
        assert runner.failures == 0, "".join(report)
    else:
        exec(compile(code, name, "exec"), {"__name__": "__docs__"})


def test_python_blocks_that_do_not_run_are_few():
    skipped = [(p.name, n) for p, n, info, _ in code_blocks("python") if info != "python"]
    assert all(
        info == "python no-run" for _, _, info, _ in code_blocks("python") if info != "python"
    )
    assert len(skipped) <= 3, f"too many ```python no-run blocks: {skipped}"


def commands():
    """(page, script, argv) for every `python script.py ...` in a ```bash block or an inline code
    span."""
    for page, line, _, code in code_blocks("bash"):
        for command in code.replace("\\\n", " ").splitlines():
            yield from _python_calls(page, line, command)
    for page in PAGES:
        for n, text in enumerate(prose(page).splitlines(), 1):
            for span in re.findall(r"`([^`\n]*\bpython [^`\n]+)`", text):
                yield from _python_calls(page, n, span)


def _python_calls(page, line, command):
    words = shlex.split(command, comments=True)
    for i, word in enumerate(words):
        if word == "python" and i + 1 < len(words) and words[i + 1].endswith(".py"):
            argv = words[i + 2 :]
            argv = argv[: argv.index("&&")] if "&&" in argv else argv
            yield pytest.param(page, words[i + 1], argv, id=f"{page.name}:{line}:{words[i + 1]}")


@pytest.mark.parametrize("page, script, argv", list(commands()))
def test_commands_name_real_scripts_and_flags(page, script, argv):
    path = ROOT / script
    assert path.exists(), f"{page.name}: python {script}: no such script"
    source = path.read_text()
    for flag in (a.split("=")[0] for a in argv if a.startswith("--")):
        assert f'"{flag}"' in source, (
            f"{page.name}: python {script} {' '.join(argv)}: {script} has no flag {flag}"
        )
    if "def parse_args(" in source:  # the examples: their own parser must accept the whole command
        spec = importlib.util.spec_from_file_location(f"docs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.parse_args(argv)


# --- the reading order and the figures ----------------------------------------------


def line_counts():
    """(file, count) for every row of docs/README.md's tables that links a file and gives its
    lines."""
    row = re.compile(r"^\|.*?\[`([^`]+)`\]\(\.\./([^)#]+)\).*?\|\s*(\d[\d,]*)\s*\|", re.M)
    return [
        (m.group(2), int(m.group(3).replace(",", "")))
        for m in row.finditer((DOCS / "README.md").read_text())
    ]


def test_reading_order_line_counts_are_current():
    counts = line_counts()
    assert counts, "docs/README.md has no table of files and line counts"
    for path, stated in counts:
        actual = len((ROOT / path).read_text().splitlines())
        assert abs(stated - actual) <= LINE_COUNT_SLACK * actual, (
            f"docs/README.md says {path} has {stated} lines; it has {actual}: update the table"
        )


def test_reading_order_totals_are_current():
    """The first paragraph's "about N lines of library and M of examples"."""
    m = re.search(
        r"about\s+([\d,]+)\s+lines\s+of\s+library\s+and\s+([\d,]+)\s+of\s+examples",
        (DOCS / "README.md").read_text(),
    )
    assert m, "docs/README.md no longer states the library's and the examples' sizes"
    for stated, folder in zip(m.groups(), ("minivae", "examples")):
        actual = sum(len(p.read_text().splitlines()) for p in (ROOT / folder).rglob("*.py"))
        assert abs(int(stated.replace(",", "")) - actual) <= LINE_COUNT_SLACK * actual, (
            f"docs/README.md says about {stated} lines in {folder}/; it has {actual}"
        )


def test_reading_order_lists_every_file():
    listed = {path for path, _ in line_counts()}
    files = {
        str(p.relative_to(ROOT)) for d in ("minivae", "examples") for p in (ROOT / d).rglob("*.py")
    }
    missing = sorted(files - listed)
    assert not missing, f"docs/README.md's reading order lacks {missing}"


def test_figures_are_made_by_the_script_and_small(tmp_path):
    spec = importlib.util.spec_from_file_location("docs_figures", DOCS / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = module.main(tmp_path)
    assert made, "docs/figures.py made no figures"
    for name in made:
        assert (tmp_path / name).stat().st_size > 0
        assert (DOCS / name).exists(), f"docs/{name} is not committed: run python docs/figures.py"
    for png in DOCS.glob("*.png"):
        assert png.stat().st_size < MAX_PNG_BYTES, (
            f"docs/{png.name} is {png.stat().st_size} bytes (limit {MAX_PNG_BYTES})"
        )
