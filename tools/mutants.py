"""Mutation testing of creditbench's numeric code with mutmut 3 (``make mutants``).

    python tools/mutants.py run [FILE ...]      mutate, test, then print the report
    python tools/mutants.py report [FILE ...]   the report of the last run only

FILE is a path from ``SCOPE`` below (default: all of them). mutmut copies the sources into
``mutants/`` (git-ignored), replaces every function by a trampoline that dispatches to the
original or to one mutant, runs the selected tests once to record which test calls which
function (``mutants/mutmut-stats.json``, kept between runs and extended when tests are added),
and then tests each mutant with only the tests that call its function (``pytest -x``). The
configuration (which files are mutated, which tests are used, process isolation) is in
``[tool.mutmut]`` of pyproject.toml; this script adds what mutmut 3 does not do:

* **functions decorated with ``@torch.no_grad()`` or ``@contextmanager`` are mutated too.**
  mutmut skips every decorated function (a decorator may have side effects when the copies it
  makes for the trampoline are defined); for these two pure wrappers that rule would leave out
  the core of fa, tp and dtp and the cost meter's phases. The decorator is kept on the
  trampoline (so the call still runs under no_grad / as a context manager) and removed from
  the original's and the mutants' copies, which the trampoline calls;
* **the fastest tests first** for each mutant (mutmut's order is arbitrary), so that ``pytest -x`` stops early;
* **function-level scope**: only parts of some files are in scope (``SCOPE``); mutants outside
  it are generated but never run;
* **the report**: killed / survived / timed out per file, each survivor with its diff, marked
  *equivalent* when ``tests/equivalent_mutants.md`` explains why it cannot change a result.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# file → mangled function-name patterns in mutation scope (mutmut names a method xǁClassǁmethod,
# a module-level function x_name)
# every algorithm module (its whole file), found by name as the registry finds them
SCOPE: dict[str, list[str]] = {
    **{f"algorithms/{p.name}": ["*"] for p in sorted((ROOT / "algorithms").glob("*.py")) if not p.name.startswith("_")},
    "harness/cost.py": ["*"],
    "harness/metrics.py": ["*"],
    # layers and activations
    "harness/networks.py": [f"xǁ{cls}ǁ*" for cls in
                            ("Activation", "Tanh", "LeakyReLU", "ReLU", "Identity", "Layer", "Linear", "Conv",
                             "Network", "Forward")],
    "harness/algorithm.py": ["x_output_error__*"],
    "harness/bench_profile.py": ["*"],  # how `bench --profile` splits time by kind of work
}
EQUIVALENT = ROOT / "tests" / "equivalent_mutants.md"
PURE_DECORATORS = {"torch.no_grad()", "contextmanager"}
KILLED = {"killed", "timeout", "caught by type check"}


def module_of(path: str) -> str:
    return path[:-3].replace("/", ".")


def patterns_for(files: list[str]) -> list[str]:
    return [f"{module_of(f)}.{p}" for f in files for p in SCOPE[f]]


def in_scope(key: str, file: str) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns_for([file]))


# ---------------------------------------------------------------------------------- mutmut patches
def patch_mutmut() -> None:
    """Let mutmut mutate functions whose only decorators are pure wrappers (see the module docstring)."""
    import libcst as cst
    from libcst.metadata import PositionProvider
    from mutmut.mutation import file_mutation as fm

    def pure(function) -> bool:
        return bool(function.decorators) and all(
            cst.Module([]).code_for_node(d.decorator) in PURE_DECORATORS for d in function.decorators)

    skip = fm.MutationVisitor._skip_node_and_children

    def skip_node_and_children(self, node) -> bool:
        if isinstance(node, cst.FunctionDef) and pure(node):  # mutmut's other rules for functions
            pos = self.get_metadata(PositionProvider, node, None)
            if pos and pos.start.line in self._ignored_node_lines:
                self.ignored_functions.add(node.name.value)
                return True
            return node in self._enum_creation_hooks or node.name.value in fm.NEVER_MUTATE_FUNCTION_NAMES
        return skip(self, node)

    arrange = fm.function_trampoline_arrangement

    def function_trampoline_arrangement(function, mutants, class_name):
        decl, nodes, assign, names = arrange(function, mutants, class_name)
        if pure(function):  # nodes[0] is the trampoline; the copies it calls lose the decorator
            nodes = [nodes[0], *(n.with_changes(decorators=[]) for n in nodes[1:])]
        return decl, nodes, assign, names

    fm.MutationVisitor._skip_node_and_children = skip_node_and_children
    fm.function_trampoline_arrangement = function_trampoline_arrangement

    # fastest tests first (mutmut hands them over in set order): with pytest -x, a mutant is killed by the
    # first test that fails, so most kills cost a fraction of a second instead of the slowest test
    from mutmut.state import state
    from mutmut.workers import isolation

    for runner in (isolation.ForkServerRunner, isolation.ForkRunner):
        def submit(self, mutant_name, tests, cpu_time_limit, estimated_time, _submit=runner.submit):
            duration = state().duration_by_test
            tests = sorted(tests, key=lambda t: (duration.get(t, 0.0), t))
            return _submit(self, mutant_name, tests, cpu_time_limit, estimated_time)

        runner.submit = submit

    # mutmut turns an exception of a mutant's test run into exit status 255 without a word: keep its traceback
    from mutmut.runners.harness import PytestRunner

    run_tests = PytestRunner.run_tests

    def run_tests_logged(self, *, mutant_name, tests):
        try:
            return run_tests(self, mutant_name=mutant_name, tests=tests)
        except Exception:
            import traceback

            with open(ROOT / "mutants" / "mutant-errors.log", "a") as f:
                f.write(f"--- {mutant_name}\n{traceback.format_exc()}\n")
            raise

    PytestRunner.run_tests = run_tests_logged


# ---------------------------------------------------------------------------------- report
def load_equivalent() -> tuple[dict[str, str], dict[str, str]]:
    """From tests/equivalent_mutants.md: mutant name → reason (rows ``| `name` | reason |``) and keyword
    rules, keyword → reason (rows ``| keyword `device` | reason |``: a mutant whose only change is that
    keyword argument set to None or dropped, or ``.to(x)`` → ``.to(None)`` for ``device``)."""
    if not EQUIVALENT.exists():
        return {}, {}
    text = EQUIVALENT.read_text()
    names = dict(re.findall(r"^\|\s*`([^`]+__mutmut_\d+)`\s*\|\s*(.+?)\s*\|\s*$", text, re.M))
    rules = dict(re.findall(r"^\|\s*keyword\s+`(\w+)`\s*\|\s*(.+?)\s*\|\s*$", text, re.M))
    return names, rules


def _drop_keyword(code: str, kw: str) -> str:
    """``code`` (whitespace removed) without any ``kw=<expr>`` argument (and ``.to(<expr>)`` for device)."""
    out = code
    for pattern in [rf"(?<![\w.]){kw}="] + ([r"\.to\((?=[^)])"] if kw == "device" else []):
        while (m := re.search(pattern, out)):
            depth, i = 0, m.end()
            while i < len(out) and not (depth == 0 and out[i] in ",)"):
                depth += out[i] in "([{"
                depth -= out[i] in ")]}"
                i += 1
            keep = m.group(0) if m.group(0).startswith(".to(") else ""
            out = out[:m.start()] + (keep[:-1] + "(" if keep else "") + out[i + (out[i:i + 1] == ","):]
    return out.replace(",)", ")")


def keyword_rule(diff: str, rules: dict[str, str]) -> str | None:
    """The keyword rule a mutant's diff falls under, if its only change is that keyword set to None or dropped."""
    def side(sign: str) -> str:
        return "".join(ln.strip()[1:] for ln in diff.split("\n") if ln.strip().startswith(sign)).replace(" ", "")

    old, new = side("-"), side("+")
    for kw in rules:
        weakened = (f"{kw}=None" in new or new.count(f"{kw}=") < old.count(f"{kw}=")
                    or (kw == "device" and new.count(".to(None)") > old.count(".to(None)")))
        if old != new and weakened and _drop_keyword(old, kw) == _drop_keyword(new, kw):
            return kw
    return None


def load_results(files: list[str]) -> dict[str, dict[str, str]]:
    from mutmut.stats import status_by_exit_code

    out = {}
    for f in files:
        meta = ROOT / "mutants" / (f + ".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        # mutmut files exit status 255 (the worker's own exception: pytest could not run) under "timeout";
        # here it is an error, not a kill
        out[f] = {k: "error" if v == 255 else status_by_exit_code[v] for k, v in sorted(codes.items()) if in_scope(k, f)}
    return out


def diff_of(name: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    try:
        diff = get_diff_for_mutant(name)
    except Exception as e:  # a stale name (the function changed since): the report still prints
        return f"    (no diff: {e})"
    lines = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return "\n".join("    " + ln for ln in lines)


def report(files: list[str], *, seconds: float | None = None, diffs: bool = True) -> int:
    os.chdir(ROOT)
    results, (equivalent, rules) = load_results(files), load_equivalent()
    header = f"{'file':24} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8} {'equiv.':>6} {'other':>6} {'score':>7}"
    lines = [header, "-" * len(header)]
    survivors, reasons, used = [], {}, set()
    for f, res in results.items():
        n = len(res)
        killed = sum(s == "killed" for s in res.values())
        timeout = sum(s == "timeout" for s in res.values())
        surv = [k for k, s in res.items() if s == "survived"]
        for k in surv:
            if k in equivalent:
                reasons[k] = equivalent[k]
            elif rules and (kw := keyword_rule(diff_of(k), rules)):
                reasons[k], _ = f"keyword `{kw}`: {rules[kw]}", used.add(kw)
        eq = [k for k in surv if k in reasons]
        other = n - killed - timeout - len(surv)
        score = f"{100 * (killed + timeout) / n:6.1f}%" if n else "     -"
        lines.append(f"{f:24} {n:7} {killed:7} {timeout:7} {len(surv):8} {len(eq):6} {other:6} {score:>7}")
        survivors += [(f, k, res[k]) for k, s in res.items() if s not in KILLED]
    print("\n".join(lines))
    print("score = (killed + timed out) / mutants; equiv. = survivors explained in tests/equivalent_mutants.md;"
          " other = no tests / not checked / error (pytest could not run)")
    unexplained = [(f, k, s) for f, k, s in survivors if k not in reasons]
    if survivors:
        print("\nmutants not killed:")
        for f, k, s in survivors:
            print(f"  {k}  [{'equivalent: ' + reasons[k] if k in reasons else s.upper()}]")
            if diffs and k not in reasons:
                print(diff_of(k))
    stale = sorted(set(equivalent) - {k for r in results.values() for k in r})
    if stale and len(files) == len(SCOPE):
        print("\nlisted in tests/equivalent_mutants.md but no longer generated (update the list):", *stale, sep="\n  ")
    if seconds is not None:
        print(f"\nmutation run: {seconds:.0f} s")
    print(f"{len(unexplained)} survivor(s) neither killed nor listed as equivalent")
    return len(unexplained)


# ---------------------------------------------------------------------------------- main
class QuietTail:
    """Passes mutmut's output through up to its per-mutant listing (one line per mutant, which the
    report below replaces)."""

    def __init__(self, out):
        self.out, self.quiet = out, False

    def write(self, text: str) -> int:
        if "Mutant results" in text:
            self.quiet = True
        return len(text) if self.quiet else self.out.write(text)

    def flush(self) -> None:
        self.out.flush()

    def __getattr__(self, name):
        return getattr(self.out, name)


def parse_files(args: list[str]) -> list[str]:
    files = [a.removeprefix("./") for a in args] or list(SCOPE)
    bad = [f for f in files if f not in SCOPE]
    if bad:
        sys.exit(f"error: not in the mutation scope: {', '.join(bad)}; valid: {', '.join(SCOPE)} "
                 "(a new harness file needs an entry in SCOPE of tools/mutants.py and in [tool.mutmut] only_mutate)")
    return files


def check_config() -> None:
    from mutmut.configuration import config

    only = config().only_mutate
    missing = [f for f in SCOPE if not any(fnmatch.fnmatchcase(f, p) for p in only)]
    if missing:
        sys.exit(f"error: [tool.mutmut] only_mutate in pyproject.toml does not cover {', '.join(missing)}")


def refresh_stats() -> None:
    """mutmut re-records which tests call which function only for tests it has not seen: after any change
    to the selected tests, their conftest or the sources, drop its record so that the run re-collects it."""
    from mutmut.configuration import config

    cfg = config()
    files = [ROOT / "pyproject.toml", ROOT / "tests" / "conftest.py",
             *(ROOT / a for a in cfg.pytest_add_cli_args_test_selection if (ROOT / a).is_file())]
    for src in cfg.source_paths:
        files += sorted((ROOT / src).rglob("*.py"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    stamp, stats = ROOT / "mutants" / "creditbench-inputs.sha256", ROOT / "mutants" / "mutmut-stats.json"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    if stats.exists():
        print("tests or sources changed since the last run: mutmut re-collects which tests cover what")
        stats.unlink()
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(digest.hexdigest())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "report"):
        print(__doc__)
        return 2
    os.chdir(ROOT)
    files = parse_files(argv[1:])
    if argv[0] == "report":
        report(files)
        return 0
    check_config()
    refresh_stats()
    patch_mutmut()
    os.environ["CREDITBENCH_MUTATION_RUN"] = "1"  # tests/conftest.py: one thread per worker, data loaders preloaded
    jobs = os.environ.get("MUTANTS_JOBS", "2")
    from mutmut.__main__ import cli

    t0 = time.perf_counter()
    stdout, sys.stdout = sys.stdout, QuietTail(sys.stdout)
    try:
        cli.main(["run", "--max-children", jobs, *patterns_for(files)], prog_name="mutmut", standalone_mode=False)
    except SystemExit as e:
        if e.code:
            return int(e.code)
    finally:
        sys.stdout = stdout
    report(files, seconds=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
