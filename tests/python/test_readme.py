"""The README's examples run as written (against a server on a test port)."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_thrift_example_runs(server):
    code = python_blocks()[0].replace("2229", str(server.thrift[1]))
    out = subprocess.run([sys.executable, "-c", code], cwd=README.parent, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "b'hello' 1"
