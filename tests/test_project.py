"""The project's own files agree with each other: Python version, documentation links."""

import re
import sys
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent


def test_python_version_is_stated_consistently():
    """pyproject, Makefile and README all say Python 3.11 (constraints.txt is resolved on 3.11 only)."""
    spec = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    assert spec == SpecifierSet(">=3.11,<3.12")
    assert Version("3.11.7") in spec and Version("3.12.0") not in spec and Version("3.10.9") not in spec
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^PYTHON \?= python3\.11$", makefile, re.M)
    assert "sys.version_info[:2] == (3, 11)" in makefile  # an existing .venv of another version is refused
    readme = (REPO / "README.md").read_text()
    assert "Python 3.11" in readme and '">=3.11,<3.12"' in readme
    assert Version(".".join(map(str, sys.version_info[:3]))) in spec  # the venv the tests run in


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _tracked_text_files():
    import subprocess

    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if n.endswith((".py", ".md", ".toml", ".yaml", ".txt", ".cfg")) or n == "Makefile"]


def test_documentation_links_stay_inside_the_repository():
    docs = [REPO / "README.md", REPO / "docs" / "design.md", REPO / "docs" / "plugins.md"]
    for doc in docs:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+://", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(REPO) and path.exists(), f"{doc.name}: link {target} leaves the repository or is broken"
    for path in _tracked_text_files() + docs:
        if path.name == "test_project.py":
            continue
        text = path.read_text(errors="replace")
        assert "../shared" not in text and "DESIGN.md" not in text, f"{path.relative_to(REPO)} refers outside the repository"


def test_design_doc_covers_every_builtin_algorithm_and_the_metrics():
    from harness.registry import ALGORITHMS, load_plugins

    load_plugins()
    design = (REPO / "docs" / "design.md").read_text()
    for name in ALGORITHMS.names():
        module = ALGORITHMS.get(name).__module__
        if module.startswith("algorithms."):
            assert f"### {name} — " in design and f"(../algorithms/{module.split('.')[1]}.py)" in design, name
    for needle in ("update_kind", "update_mix", "Plausibility record", "pretrain_flops", "β per example",
                   "Q starts at 0", "sigma_source=noise", "## Protocol", "## Plugin contract", "## Layout"):
        assert needle in design, needle


def test_plugin_guide_documents_the_network_api():
    guide = (REPO / "docs" / "plugins.md").read_text()
    for needle in ("@register_algorithm", "forward_all", "Forward(h, a, logits, z)", "fw.h[l]", "fw.a[l]",
                   "fw.z[l]", "carry(signal", "maxpool", "Layer.backward(delta, h", "act.backward", "output_error", "set_grad", "self.gen",
                   "self.phase(", "update_kind()", "update_mix()", "pretrain(", "extra_state()",
                   "load_extra_state", "plausibility()", "when=", "creditbench new-algorithm"):
        assert needle in guide, needle
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Adding an algorithm"):readme.index("## Security")]
    assert "docs/plugins.md" in section and "creditbench new-algorithm" in section


def test_every_result_records_the_cpu_model(monkeypatch, tmp_path):
    """Same seed, same thread count → same numbers on one CPU model; another model may pick other kernels,
    so the environment record names the model (from /proc/cpuinfo on Linux)."""
    import torch

    import harness.provenance as provenance

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: Example\nmodel name\t: Example CPU 9000 @ 3.0GHz\nflags\t: fpu\n")
    real = provenance.Path
    monkeypatch.setattr(provenance, "Path", lambda p: info if p == "/proc/cpuinfo" else real(p))
    assert provenance.device_info(torch.device("cpu"))["cpu_model"] == "Example CPU 9000 @ 3.0GHz"
    info.unlink()  # no /proc: the architecture
    assert provenance.cpu_model() == (provenance.platform.processor() or provenance.platform.machine())
