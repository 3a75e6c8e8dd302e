'use strict';
// Starts a throwaway ZooKeeper (tests/zookeeper/serve) on a free loopback port.
const { spawn } = require('child_process');
const net = require('net');
const path = require('path');

const SERVE = path.join(__dirname, '..', '..', '..', 'tests', 'zookeeper', 'serve');

/** A port nothing listens on right now (ZooKeeper binds it a moment later). */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Sends ZooKeeper's four-letter word `ruok`; true once it answers `imok`. */
function ruok(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    socket.setTimeout(1000, () => socket.destroy());
    socket.on('connect', () => socket.write('ruok'));
    socket.on('data', (d) => { reply += d; });
    socket.on('close', () => resolve(reply === 'imok'));
    socket.on('error', () => {});
  });
}

// Any ZooKeeper still running when the process ends (a test that crashed
// past its finally) is killed with it.
const running = new Set();
process.on('exit', () => { for (const proc of running) proc.kill('SIGKILL'); });

/** {connect: "127.0.0.1:PORT", stop()} once ZooKeeper answers (at most ~30 s). */
async function startZooKeeper(dir) {
  const port = await freePort();
  let output = '';
  const proc = spawn(SERVE, [dir, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  proc.stdout.on('data', (d) => { output += d; });
  proc.stderr.on('data', (d) => { output += d; });
  const stop = () => new Promise((done) => {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      running.delete(proc);
      return done();
    }
    proc.once('exit', () => {
      running.delete(proc);
      done();
    });
    proc.kill('SIGKILL');
  });
  const deadline = Date.now() + 30000;
  while (!(await ruok(port))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`ZooKeeper did not start on port ${port}: ${output}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { connect: `127.0.0.1:${port}`, stop };
}

module.exports = { startZooKeeper };
