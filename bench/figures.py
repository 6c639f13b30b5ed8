"""Render the documents' measured figures from ``bench/results/*.json`` and catch the stale ones.

    python3 bench/figures.py check     # exit 1, naming each section, when a document is out of step
    python3 bench/figures.py render    # re-render every figure; mark stale ones in the text itself
    python3 bench/figures.py check --rev HEAD   # the documents and results as committed, ignoring local edits

Standard library and git only (CI runs it before anything is installed).

**Markers.** A measured number in BENCHMARKS.md, RELIABILITY.md or README.md sits between HTML
comments naming its result file and key (``bench/results/NAME.json``, ``figures.KEY``, dots for
nested keys); GitHub shows only the number::

    ... peaks at <!--fig extract_hour:peak_rss_mb-->2,558<!--/fig--> MB ...

A whole table::

    <!--fig-table score_quiet:throughput-->

    | measurement | files | ... |
    |---|---|---|

    <!--/fig-table-->

(the figure is ``{"columns": [...], "rows": [[...]]}``). Every section (the text under a heading)
that shows figures of a result carries that result's provenance line, which `render` writes::

    <!--fig-source score_quiet-->*Measured: ...*<!--/fig-source-->

A value is printed as stored (a string as is; a number with ``fmt=SPEC`` in the marker, Python's
format spec, else ``str``). A key may go into lists by index: ``tables.speed.rows.3.1`` is a cell of a
table figure (what `bench/results.py` keeps of a benchmark's printed report). A name with dots in it is
matched whole (the longest name that fits: ``augment.reverb(rt60_s=[0.8, 0.8])`` is one figure of
``augment``), and a ``NAME:KEY`` with spaces in it is written in double quotes::

    <!--fig "ood:groups.demo eval (unseen attacks).flagged_rate" fmt=.0%-->7%<!--/fig-->

**Staleness.** A result is stale when a module it declares (``modules``) changed after its
``commit``: a commit in ``git log COMMIT..HEAD -- MODULES``, or an uncommitted change to one.
`render` writes the provenance line of a stale result as "Stale since COMMIT (what changed)" and
records it in the marker (``<!--fig-source NAME stale=COMMIT-->``); a missing result file as
"no raw result" (``missing``). `check` fails, naming the document and section, when:

* a result is stale or missing but its provenance line shows it as current (or stale since another
  commit: re-render);
* a figure's text differs from its result (typed by hand, or the result changed: re-render);
* a figure names a key its result lacks, or a section shows a result's figures without its
  provenance line, or a result names a module that never existed.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

DOCS = ("BENCHMARKS.md", "RELIABILITY.md", "README.md", "SCALE.md")
MARKER = re.compile(r"<!--(fig|fig-table|fig-source) ([^>]*?)-->(.*?)<!--/\1-->", re.S)
HEADING = re.compile(r"^(#{1,6}) +(.*?)\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


class FigureError(Exception):
    pass


# ---------------------------------------------------------------------------------------- git


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FigureError(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout


@dataclass
class State:
    """A result's state against the tree: missing, current, or stale since a commit (or the working tree)."""

    name: str
    result: dict | None
    stale_since: str | None = None  # short sha of the first commit that changed a module, or "worktree"
    changed: list[str] = field(default_factory=list)
    n_commits: int = 0
    commits: list[str] = field(default_factory=list)  # every commit since the measurement that changed a module

    def acknowledged(self, shown: str | None) -> bool:
        """Whether a provenance line showing ``shown`` (None: current) tells the truth. A line marked stale
        since any commit that changed a module still does after later commits (or a merge that brings
        in an older one): the figure is not shown as current."""
        if self.result is None:
            return shown == "missing"
        if not self.stale_since:
            return shown is None
        return shown == self.stale_since or (shown is not None and len(shown) >= 7 and any(c.startswith(shown) for c in self.commits))

    @property
    def token(self) -> str | None:
        return "missing" if self.result is None else self.stale_since


class Tree:
    """The repository: its results and what changed since each one's commit (cached)."""

    def __init__(self, root: Path, rev: str | None = None):
        self.root = root
        self.rev = rev  # None: the working tree; else judge the documents and results as committed at rev
        self.results_dir = root / "bench" / "results"
        self._states: dict[str, State] = {}

    def state(self, name: str) -> State:
        if name not in self._states:
            self._states[name] = self._state(name)
        return self._states[name]

    def _state(self, name: str) -> State:
        path = self.results_dir / f"{name}.json"
        text = self.read(path.relative_to(self.root).as_posix())
        if text is None:
            return State(name, None)
        try:
            result = json.loads(text)
        except ValueError as error:
            raise FigureError(f"{path.relative_to(self.root)}: not readable JSON ({error})") from error
        for key in ("commit", "modules", "figures"):
            if key not in result:
                raise FigureError(f"{path.relative_to(self.root)}: no {key!r}")
        commit, modules = result["commit"], list(result["modules"])
        if not modules:
            raise FigureError(f"{path.relative_to(self.root)}: declares no modules")
        try:
            full = git(self.root, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}").strip()
        except FigureError as error:
            raise FigureError(f"{path.relative_to(self.root)}: commit {commit} is not in this repository "
                              "(a shallow clone? fetch the history)") from error
        for module in modules:
            if not self.exists(module) and not _in_commit(self.root, full, module):
                raise FigureError(f"{path.relative_to(self.root)}: module {module!r} exists neither now nor at {commit[:7]}")
        log = git(self.root, "log", "-c", "--format=@%H", "--name-only",  # -c: a merge lists what it changed against every parent
                   f"{full}..{self.rev or 'HEAD'}", "--", *modules)
        commits, changed = [], []
        for line in log.splitlines():
            line = line.strip()
            if line.startswith("@"):
                commits.append(line[1:])
            elif line and line not in changed:
                changed.append(line)
        dirty = [] if self.rev else [line[3:] for line in git(self.root, "status", "--porcelain", "--untracked-files=no", "--", *modules).splitlines()]
        state = State(name, result, changed=changed, n_commits=len(commits), commits=commits)
        if commits:
            state.stale_since = commits[-1][:7]  # git log lists the newest first
        elif dirty:
            state.stale_since = "worktree"
        for path_ in dirty:
            if path_ not in state.changed:
                state.changed.append(path_ + " (uncommitted)")
        return state

    def read(self, relpath: str) -> str | None:
        """A file's text in the working tree, or at ``rev``; None when it is not there."""
        if self.rev is None:
            path = self.root / relpath
            return path.read_text() if path.is_file() else None
        done = subprocess.run(["git", "-C", str(self.root), "show", f"{self.rev}:{relpath}"], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    def exists(self, relpath: str) -> bool:
        return (self.root / relpath).exists() if self.rev is None else _in_commit(self.root, self.rev, relpath)


def _in_commit(root: Path, commit: str, path: str) -> bool:
    return subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{commit}:{path}"], capture_output=True).returncode == 0


# ---------------------------------------------------------------------------------------- rendering


def value_text(value, fmt: str | None) -> str:
    if isinstance(value, str):
        return value
    if fmt:
        return format(value, fmt)
    return str(value)


def table_text(figure) -> str:
    if not (isinstance(figure, dict) and isinstance(figure.get("columns"), list) and isinstance(figure.get("rows"), list)):
        raise FigureError("not a table (expected {\"columns\": [...], \"rows\": [[...]]})")
    cells = lambda row: "| " + " | ".join(value_text(c, None) for c in row) + " |"  # noqa: E731
    lines = [cells(figure["columns"]), "|" + "---|" * len(figure["columns"])]
    lines += [cells(row) for row in figure["rows"]]
    return "\n\n" + "\n".join(lines) + "\n\n"


def lookup(figures: dict, key: str):
    value, rest = figures, key
    while rest:  # a number indexes a list: tables.speed.rows.0.1 is a table's cell
        if isinstance(value, list):
            part, _, tail = rest.partition(".")
            if not (part.isdigit() and int(part) < len(value)):
                raise FigureError(f"no figure {key!r}")
            value, rest = value[int(part)], tail
            continue
        # a dict: the longest of its names that ``rest`` is or starts (a name may hold dots)
        names = [n for n in value if isinstance(n, str) and (rest == n or rest.startswith(n + "."))] if isinstance(value, dict) else []
        if not names:
            raise FigureError(f"no figure {key!r}")
        name = max(names, key=len)
        value, rest = value[name], rest[len(name) + 1:]
    return value


def quoted(target: str) -> str:
    """``NAME:KEY`` as a marker writes it: in double quotes when it holds spaces."""
    if not re.search(r"[\s\"'\\]", target):
        return target
    if '"' in target or "\\" in target or "-->" in target:
        raise FigureError(f"a figure name {target!r} with a double quote, backslash or '-->' cannot be written in a marker")
    return f'"{target}"'


def source_text(state: State) -> str:
    name = state.name
    if state.result is None:
        return (f"**No raw result**: `bench/results/{name}.json` is missing, so the figures below marked with it are "
                "not backed by a result.")
    r = state.result
    commit = (r.get("commit") or "?")[:7]
    parts = [f"commit {commit}" + (" (uncommitted changes)" if r.get("dirty") else "")]
    if r.get("date"):
        parts.append(str(r["date"])[:16].replace("T", " ") + " UTC")
    load, during = r.get("load_before"), r.get("load_during")
    before = load[0] if isinstance(load, list) and load and isinstance(load[0], (int, float)) else None
    if before is not None:
        parts.append(f"load {before:g} before" + (f", {during:g} during" if isinstance(during, (int, float)) else ""))
    elif isinstance(during, (int, float)):
        parts.append(f"load {during:g} during")
    for key, label in (("codec_sha256", "codec"), ("ssl_sha256", "SSL")):
        if r.get(key):
            parts.append(f"{label} {str(r[key])[:12]}")
    provenance = f"`bench/results/{name}.json` ({', '.join(parts)})"
    transcribed = r.get("transcribed")
    if transcribed:
        provenance += f", transcribed from {transcribed.get('from', 'the documents')}"
    if state.stale_since:
        since = "uncommitted changes" if state.stale_since == "worktree" else state.stale_since
        what = ", ".join(state.changed[:4]) + (f" and {len(state.changed) - 4} more" if len(state.changed) > 4 else "")
        commits = f" in {state.n_commits} commit{'s' if state.n_commits != 1 else ''}" if state.n_commits else ""
        return f"**Stale since {since}** ({what} changed{commits} after the measurement): {provenance}."
    return f"*Measured: {provenance}.*"


# ---------------------------------------------------------------------------------------- documents


@dataclass
class Marker:
    kind: str
    name: str
    key: str | None
    attrs: dict
    start: int
    end: int
    body: str
    section: str


def sections(text: str) -> list[tuple[int, str]]:
    """(offset, heading) of each heading outside code fences."""
    found, offset, fenced = [(0, "(top)")], 0, False
    for line in text.splitlines(keepends=True):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            match = HEADING.match(line)
            if match:
                found.append((offset, match.group(2)))
        offset += len(line)
    return found


def masked(text: str) -> str:
    """``text`` with code (fenced blocks and `inline spans`) blanked out, offsets kept: a marker quoted
    as an example is not a marker."""
    out, fenced = [], False
    for line in text.splitlines(keepends=True):
        if FENCE.match(line):
            fenced = not fenced
            out.append(" " * len(line.rstrip("\n")) + line[len(line.rstrip("\n")):])
        elif fenced:
            out.append(re.sub(r"[^\n]", " ", line))
        else:
            out.append(re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), line))
    return "".join(out)


def parse(text: str) -> list[Marker]:
    heads = sections(text)
    markers = []
    for match in MARKER.finditer(masked(text)):
        kind, spec = match.group(1), match.group(2)
        body = text[match.start(3):match.end(3)]
        try:
            words = shlex.split(spec)  # "NAME:KEY WITH SPACES" in double quotes
        except ValueError as error:
            raise FigureError(f"a {kind} marker {spec!r} at offset {match.start()}: {error}") from error
        if not words:
            raise FigureError(f"a {kind} marker without a result name at offset {match.start()}")
        target, attrs = words[0], dict(w.split("=", 1) if "=" in w else (w, "") for w in words[1:])
        name, _, key = target.partition(":")
        if kind != "fig-source" and not key:
            raise FigureError(f"marker {kind} {target}: expected NAME:KEY")
        section = [h for off, h in heads if off <= match.start()][-1]
        markers.append(Marker(kind, name, key or None, attrs, match.start(), match.end(), body, section))
    return markers


def expected(marker: Marker, tree: Tree) -> tuple[str, str]:
    """The marker as `render` writes it: (opening comment spec, body)."""
    state = tree.state(marker.name)
    if marker.kind == "fig-source":
        token = state.token
        spec = marker.name + (f" stale={token}" if token and token != "missing" else " missing" if token == "missing" else "")
        return spec, source_text(state)
    spec = " ".join([quoted(f"{marker.name}:{marker.key}"), *(f"{k}={v}" if v else k for k, v in marker.attrs.items())])
    if state.result is None:
        return spec, marker.body  # nothing to render from: kept, and its provenance line says so
    figure = lookup(state.result["figures"], marker.key)
    if marker.kind == "fig":
        return spec, value_text(figure, marker.attrs.get("fmt"))
    return spec, table_text(figure)


def process(text: str, tree: Tree, doc: str) -> tuple[str, list[str]]:
    """The document re-rendered, and the problems `check` reports (those a render fixes included)."""
    problems: list[str] = []
    markers = parse(text)
    covered = {(m.section, m.name) for m in markers if m.kind == "fig-source"}
    out, last = [], 0
    for m in markers:
        where = f"{doc}, section '{m.section}'"
        try:
            spec, body = expected(m, tree)
        except FigureError as error:
            problems.append(f"{where}: {m.kind} {m.name}{':' + m.key if m.key else ''}: {error}")
            continue
        if m.kind != "fig-source" and (m.section, m.name) not in covered:
            covered.add((m.section, m.name))  # one line per section
            problems.append(f"{where}: shows figures of {m.name} without its provenance line: add "
                            f"<!--fig-source {m.name}--><!--/fig-source--> to the section and run render")
        if m.kind == "fig-source":
            state = tree.state(m.name)
            shown = "missing" if "missing" in m.attrs else m.attrs.get("stale")
            if not state.acknowledged(shown):
                if state.result is None:
                    problems.append(f"{where}: the raw result bench/results/{m.name}.json is missing")
                elif state.stale_since and not shown:
                    problems.append(f"{where}: {m.name} is shown as current, but {', '.join(state.changed)} changed "
                                    f"after {str(state.result['commit'])[:7]} (first in {state.stale_since}): run render")
                else:
                    problems.append(f"{where}: {m.name} is shown as {shown or 'current'} but is "
                                    f"{'stale since ' + state.stale_since if state.stale_since else 'current'}: run render")
            elif shown is None and m.body != body:  # a stale line's wording may lag (more commits since): not checked
                problems.append(f"{where}: the provenance line of {m.name} is not the rendered one: run render")
        elif m.body != body:
            problems.append(f"{where}: {m.name}:{m.key} shows {m.body.strip()[:40]!r}, its result gives "
                            f"{body.strip()[:40]!r}: run render")
        line_start = text.rfind("\n", 0, m.start) + 1
        if m.kind != "fig-table" and not text[line_start:m.start].strip():
            problems.append(f"{where}: the marker of {m.name}{':' + m.key if m.key else ''} starts a line, so GitHub would show "
                            "that line as raw HTML: put a word (or <sub>) before it")
        out.append(text[last:m.start])
        out.append(f"<!--{m.kind} {spec}-->{body}<!--/{m.kind}-->")
        last = m.end
    out.append(text[last:])
    return "".join(out), problems


def run(root: Path, docs: tuple[str, ...], fix: bool, rev: str | None = None) -> list[str]:
    tree = Tree(root, rev)
    problems = []
    for doc in docs:
        text = tree.read(doc)
        if text is None:
            continue
        try:
            new, found = process(text, tree, doc)
        except FigureError as error:
            problems.append(f"{doc}: {error}")
            continue
        if fix and new != text:
            (root / doc).write_text(new)
            print(f"rendered {doc}")
        problems += found
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("check", "render"))
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="repository root")
    parser.add_argument("--rev", default=None, help="check the documents and results as committed at REV (e.g. HEAD), "
                        "ignoring uncommitted changes (check only)")
    parser.add_argument("docs", nargs="*", default=list(DOCS), help="documents (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.rev and args.command == "render":
        parser.error("render writes the working tree: no --rev")
    root = args.root.resolve()
    try:
        problems = run(root, tuple(args.docs), fix=args.command == "render", rev=args.rev)
        if args.command == "render":
            problems = run(root, tuple(args.docs), fix=False)  # what remains after rendering
    except FigureError as error:
        print(f"figures: {error}", file=sys.stderr)
        return 1
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"figures {args.command}: {len(problems)} problem(s)" +
              (" that render cannot fix" if args.command == "render" else ""), file=sys.stderr)
        return 1
    print(f"figures {args.command}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
