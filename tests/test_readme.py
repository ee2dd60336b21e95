"""README.md starts with the two set-up commands; the second is the test command CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _first_block():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [ln.strip() for ln in block.strip().splitlines() if ln.strip()]


def test_readme_starts_with_install_demo_and_test_commands():
    lines = _first_block()
    assert len(lines) == 2
    assert lines[0].startswith("pip install torch==2.13.0") and lines[0].endswith("volgan demo")
    assert "pytest" in lines[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _first_block()[1] in ci
    assert 0 <= ci.index("torch==2.13.0") < ci.index('-e ".[test]"')  # pinned torch installed before the project
