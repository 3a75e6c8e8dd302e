'use strict';
// Discovery through ZooKeeper: a real ZooKeeper (tests/zookeeper/serve) and
// real servers on loopback.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const zookeeper = require('node-zookeeper-client');

const { Client, Unavailable, Status } = require('..');
const { start } = require('./server');
const { startZooKeeper } = require('./zookeeper');

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'kestrel-node-'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let prefixes = 0;
const freshPrefix = () => `/kestrel-node-${process.pid}-${(prefixes += 1)}`;

/** Waits (polling every 5 ms, at most `ms`) until `check()` holds. */
async function until(check, ms, what) {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(5);
  }
}

/** ZooKeeper's callbacks as promises, for a test's own session. */
function session(connect) {
  const zk = zookeeper.createClient(connect, { sessionTimeout: 5000 });
  const call = (method, ...args) => new Promise((resolve, reject) => {
    zk[method](...args, (err, result) => (err ? reject(err) : resolve(result)));
  });
  return {
    connected: new Promise((resolve) => { zk.once('connected', resolve); zk.connect(); }),
    mkdirp: (p) => call('mkdirp', p),
    create: (p, data) => call('create', p, Buffer.from(data), zookeeper.CreateMode.EPHEMERAL_SEQUENTIAL),
    remove: (p) => call('remove', p, -1),
    close: () => zk.close(),
  };
}

/** A member record as servers write it (Finagle server-set JSON). */
function record(address, status = 'ALIVE') {
  const at = address.lastIndexOf(':');
  const endpoint = { host: address.slice(0, at), port: Number(address.slice(at + 1)) };
  return JSON.stringify({ serviceEndpoint: endpoint, additionalEndpoints: { thrift: endpoint }, status });
}

// The spec's basic case. The servers register themselves (the server's
// [zookeeper] settings); nothing in this test writes to ZooKeeper.
test('discovery: a server set READ_ONLY leaves the write set, items are delivered exactly once', async (t) => {
  const zk = await startZooKeeper(tmp());
  const servers = [];
  const clients = [];
  try {
    const prefix = freshPrefix();
    const settings = {
      KESTREL_ZOOKEEPER__HOSTS: zk.connect,
      KESTREL_ZOOKEEPER__PATH_PREFIX: prefix,
      KESTREL_ZOOKEEPER__SESSION_TIMEOUT: '2s',
    };
    for (let i = 0; i < 3; i++) servers.push(await start(tmp(), settings));
    const addresses = servers.map((s) => s.address).sort();
    const direct = servers.map((s) => new Client([s.address]));
    const client = Client.fromZooKeeper(zk.connect, prefix, { retryAfter: 200 });
    clients.push(...direct, client);

    await until(() => {
      const { write, read } = client.members();
      return write.join() === addresses.join() && read.join() === addresses.join();
    }, 20000, 'the client sees every server in both sets');

    const queue = 'disco';
    const put = [];
    const putSome = async (from, to) => {
      for (let i = from; i < to; i++) {
        const item = `item-${String(i).padStart(4, '0')}`;
        assert.strictEqual(await client.put(queue, [Buffer.from(item)]), 1);
        put.push(item);
      }
    };
    const stored = async () => Promise.all(direct.map(async (d) => (await d.peek(queue)).items));

    await putSome(0, 200);
    const before = await stored();
    assert.strictEqual(before.reduce((a, b) => a + b, 0), 200);
    assert.ok(before.every((n) => n > 0), `puts spread over every server: ${before}`);

    // READ_ONLY on one server, through a client that knows only that server.
    const leaving = servers[0].address;
    const begun = performance.now();
    await direct[0].setStatus(Status.READ_ONLY);
    await until(() => !client.members().write.includes(leaving), 10000, 'the READ_ONLY server leaves the write set');
    const took = performance.now() - begun;
    t.diagnostic(`the client saw the READ_ONLY change ${took.toFixed(1)} ms after set_status returned`);
    assert.deepStrictEqual(client.members().write, addresses.filter((a) => a !== leaving));
    assert.deepStrictEqual(client.members().read, addresses);

    await putSome(200, 400);
    const after = await stored();
    assert.strictEqual(after[0], before[0], 'no put reached the READ_ONLY server');
    assert.strictEqual(after.reduce((a, b) => a + b, 0), 400);

    // Gets still drain every server, the READ_ONLY one included.
    const got = [];
    const deadline = performance.now() + 30000;
    while (got.length < put.length && performance.now() < deadline) {
      got.push(...(await client.get(queue, 50, 200)).map((b) => b.toString()));
    }
    assert.deepStrictEqual([...got].sort(), [...put].sort(), 'every item delivered exactly once');
    assert.deepStrictEqual(await stored(), [0, 0, 0]);
  } finally {
    for (const c of clients) c.close();
    await Promise.all(servers.map((s) => s.stop()));
    await zk.stop();
  }
});

// How the client reads members, with znodes the test writes itself pointing
// at a real server started without ZooKeeper.
test('discovery: missing prefix, skipped members, empty sets, and a set appearing later', async () => {
  const zk = await startZooKeeper(tmp());
  const server = await start(tmp());
  let own = null;
  let client = null;
  try {
    const prefix = freshPrefix();
    client = Client.fromZooKeeper(zk.connect, prefix, { retryAfter: 200 });
    own = session(zk.connect);
    await own.connected;

    // Nothing announced yet: the normal "no server" errors (get after its timeout).
    await sleep(300);
    assert.deepStrictEqual(client.members(), { write: [], read: [] });
    await assert.rejects(client.put('q', [Buffer.from('x')]), Unavailable);
    const begun = performance.now();
    await assert.rejects(client.get('q', 1, 300), Unavailable);
    assert.ok(performance.now() - begun >= 290);

    // Members the client cannot use are skipped: not JSON, not ALIVE, no thrift.
    await own.mkdirp(`${prefix}/read`);
    await own.create(`${prefix}/read/member_`, 'not json');
    await own.create(`${prefix}/read/member_`, record(server.address, 'DEAD'));
    await own.create(`${prefix}/read/member_`, JSON.stringify({
      serviceEndpoint: { host: '127.0.0.1', port: 1 }, additionalEndpoints: {}, status: 'ALIVE' }));
    const member = await own.create(`${prefix}/read/member_`, record(server.address));
    await until(() => client.members().read.length === 1, 10000, 'the read member is seen');
    assert.deepStrictEqual(client.members(), { write: [], read: [server.address] });

    // The write set did not exist; the client notices it being created.
    await own.mkdirp(`${prefix}/write`);
    await own.create(`${prefix}/write/member_`, record(server.address));
    await until(() => client.members().write.length === 1, 10000, 'the write set appears');
    assert.strictEqual(await client.put('q', [Buffer.from('hello')]), 1);
    assert.deepStrictEqual(await client.get('q', 1, 1000), [Buffer.from('hello')]);

    // The member leaves: the set empties again.
    await own.remove(member);
    await until(() => client.members().read.length === 0, 10000, 'the read member leaves');
    await assert.rejects(client.get('q', 1, 0), Unavailable);
  } finally {
    if (client) client.close();
    if (own) own.close();
    await server.stop();
    await zk.stop();
  }
});
