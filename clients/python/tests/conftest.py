"""Starts real kestrel servers (KESTREL_BIN, or the workspace's debug build)."""

import os
import pathlib
import queue
import re
import subprocess
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BINARY = os.environ.get("KESTREL_BIN", str(ROOT / "target" / "debug" / "kestrel"))


class Server:
    def __init__(self, data_dir, env=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("KESTREL_")} | (env or {})
        self.proc = subprocess.Popen(
            [BINARY, "--listen", "127.0.0.1", "--thrift-port", "0", "--memcache-port", "off", "--text-port", "off", "--admin-port", "off",
             "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
        self.lines = lines = queue.Queue()  # its log, line by line
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stderr], daemon=True).start()
        self.address = None
        while True:
            line = lines.get(timeout=20)
            m = re.search(r"thrift listening on (\S+)", line)
            if m:
                self.address = m.group(1)
            if "ready to serve" in line:
                break

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def kill(self):
        """SIGKILL: no draining, no goodbye to ZooKeeper."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)


@pytest.fixture
def start_server(tmp_path):
    servers = []

    def start(name="a", env=None):
        s = Server(tmp_path / name, env)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()
