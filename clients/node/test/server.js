'use strict';
// Starts real kestrel servers (KESTREL_BIN, or the workspace's debug build).
const { spawn } = require('child_process');
const path = require('path');
const readline = require('readline');

const BINARY = process.env.KESTREL_BIN || path.join(__dirname, '..', '..', '..', 'target', 'debug', 'kestrel');

/** `settings`: extra KESTREL_* environment, e.g. the [zookeeper] section. */
function start(dataDir, settings = {}) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KESTREL_')));
  Object.assign(env, settings);
  const proc = spawn(BINARY, ['--listen', '127.0.0.1', '--thrift-port', '0', '--memcache-port', 'off',
    '--text-port', 'off', '--admin-port', 'off', '--data-dir', dataDir], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let address = null;
    const timer = setTimeout(() => reject(new Error('kestrel did not start')), 20000);
    readline.createInterface({ input: proc.stderr }).on('line', (line) => {
      const m = line.match(/thrift listening on (\S+)/);
      if (m) address = m[1];
      if (line.includes('ready to serve')) {
        clearTimeout(timer);
        resolve({
          address,
          stop: () => new Promise((done) => {
            if (proc.exitCode !== null) return done();
            proc.once('exit', () => done());
            proc.kill('SIGTERM');
          }),
        });
      }
    });
    proc.once('error', reject);
  });
}

module.exports = { start };
