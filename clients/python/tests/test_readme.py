"""The README's Python section, run as shown: its ``pycon`` sessions as doctests and its
``python -m zatt`` session through the real prompt, in order, against a fresh cluster (the
README's 127.0.0.1:5254 and :5255 become the test cluster's first two servers)."""

from __future__ import annotations

import doctest
import io
import re
import subprocess
import sys
from typing import Any

from zatt_harness import REPO, Cluster

README = (REPO / "README.md").read_text(encoding="utf-8")


def python_section() -> str:
    m = re.search(r"^## Python\b.*?(?=^## )", README, re.S | re.M)
    assert m, "the README has a Python section"
    return m.group(0)


def blocks(section: str) -> list[tuple[str, str]]:
    return [
        (m.group(1), m.group(2)) for m in re.finditer(r"^```(\w+)\n(.*?)^```", section, re.S | re.M)
    ]


def localise(text: str, cluster: Cluster) -> str:
    text = text.replace("5254", str(cluster.node(1).port))
    return text.replace("5255", str(cluster.node(2).port))


def run_doctest(text: str, globs: dict[str, Any], name: str) -> None:
    test = doctest.DocTestParser().get_doctest(text, globs, name, "README.md", 0)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, out=out.write, clear_globs=False)
    assert runner.failures == 0, out.getvalue()
    assert runner.tries > 0


def run_console(text: str) -> None:
    lines = text.splitlines()
    command = lines[0]
    assert command.startswith("$ python -m zatt "), command
    args = command.split()[4:]
    banner = lines[1]
    inputs = [line[4:] for line in lines if line.startswith(">>> ")]
    expected = [line for line in lines[2:] if not line.startswith((">>> ", "... "))]
    r = subprocess.run(
        [sys.executable, "-m", "zatt", *args],
        input="\n".join(inputs) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == banner, r.stderr
    shown = [
        line
        for line in r.stdout.replace(">>> ", "\n").replace("... ", "\n").splitlines()
        if line.strip()
    ]
    assert shown == expected, r.stdout


def test_the_readme_python_section_runs_as_shown(fresh_cluster: Cluster) -> None:
    section = python_section()
    found = blocks(section)
    assert [kind for kind, _ in found].count("pycon") >= 2
    assert [kind for kind, _ in found].count("console") == 1
    globs: dict[str, Any] = {}
    for i, (kind, text) in enumerate(found):
        text = localise(text, fresh_cluster)
        if kind == "pycon":
            run_doctest(text, globs, f"README Python block {i}")
        elif kind == "console":
            run_console(text)


def test_the_prompt_reports_an_unreachable_cluster_and_bad_usage() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "zatt", "--endpoints", "127.0.0.1:1", "--timeout", "0.5"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.startswith("python -m zatt: cluster unavailable"), r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "zatt", "--timeout", "soon"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
