"""The README's examples run as written (against a server on a test port)."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def run_block(index, server):
    code = python_blocks()[index].replace("2229", str(server.thrift[1]))
    out = subprocess.run([sys.executable, "-c", code], cwd=README.parent, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_quick_start_example_runs(server):
    # The quick start's client, installed into a venv as the README says
    # (tests/run installs clients/python into its venv the same way).
    assert run_block(0, server) == "[b'hello']\nb'world'"


def test_python_client_example_runs(server):
    # tests/run installs clients/python into the venv, as the README says to.
    assert run_block(1, server) == "[b'hello']"
