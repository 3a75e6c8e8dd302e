'use strict';
/**
 * A client for kestrel, and for Kestrel 2.4 servers, over Thrift.
 *
 * The generated stubs (gen/js, from idl/kestrel.thrift) speak the protocol;
 * this module adds what an application needs around them:
 * - several servers, Kestrel's way: put goes to one server per call,
 *   round-robin, skipping servers that are down or refuse writes; get polls
 *   the servers in turn, skipping those that are down or refuse reads;
 * - reconnects: a broken connection is dropped and the server left alone for
 *   `retryAfter` ms before it is tried again;
 * - reliable reads: consume runs a handler on items opened with an auto-abort
 *   deadline, confirms what it handled and aborts what it failed on.
 *
 * The servers are a fixed list, or those announced in ZooKeeper
 * (Client.fromZooKeeper, see discovery.js): puts then go to the write set,
 * everything else to the read set, and both follow the announcements.
 *
 *   const client = new Client(['127.0.0.1:2229']);
 *   await client.put('jobs', [Buffer.from('hello')]);
 *   await client.consume('jobs', async (item) => console.log(item), { timeoutMs: 1000 });
 *   client.close();
 */
const thrift = require('thrift');
const { Kestrel, types } = require('./gen');
const { Discovery } = require('./discovery');

/** Milliseconds on the wire are an i32; timers take no more either. */
const MAX_MS = 2 ** 31 - 1;
const clampMs = (ms) => Math.min(Math.max(0, ms), MAX_MS);
/** A clock that never jumps: deadlines and retry intervals use it. */
const now = () => performance.now();

/** No server could be reached. */
class Unavailable extends Error {}
/** A server refused the call (bad queue name, read-only server, ...). */
class Refused extends Error {}

/** Builds a client whose servers come later (from ZooKeeper). */
const DISCOVERED = Symbol('discovered');
const noServer = () => new Unavailable('no server available');

class Server {
  constructor(address) {
    const at = address.lastIndexOf(':');
    this.host = at > 0 ? address.slice(0, at) : '127.0.0.1';
    this.port = Number(address.slice(at + 1));
    this.address = address;
    this.connection = null;
    this.stub = null;
    this.pending = new Set();
    this.downUntil = 0;
    // Set once the server has left both discovered sets: its connection is
    // closed as soon as no call is using it.
    this.retired = false;
  }

  drop(reason) {
    if (this.connection) {
      this.connection.removeAllListeners();
      this.connection.on('error', () => {});
      this.connection.end();
      this.connection.connection.destroy();
    }
    this.connection = null;
    this.stub = null;
    for (const fail of this.pending) fail(reason);
    this.pending.clear();
  }
}

class Client {
  /**
   * @param {string[]} servers "host:port" of each server's Thrift port.
   * @param {object} [options] connectTimeout, timeout, retryAfter, pollSlice (ms).
   */
  constructor(servers, options = {}) {
    // Puts go to `writers`, every other call to `readers`; with a fixed list
    // both are that list. `pool` holds the discovered servers by address, so
    // a server in both sets, or still present after a change, keeps its
    // connection and down-mark.
    this.writers = servers === DISCOVERED ? [] : [].concat(servers).map((s) => new Server(s));
    if (servers !== DISCOVERED && this.writers.length === 0) throw new Error('no servers given');
    this.readers = this.writers;
    this.pool = new Map();
    this.discovery = null;
    // Separate turns for puts and gets: sets differ in size, and sharing one
    // turn would let alternating puts and gets always start on the same
    // servers.
    this.turn = { put: 0, get: 0 };
    this.connectTimeout = options.connectTimeout ?? 1000;
    this.timeout = options.timeout ?? 5000;
    this.retryAfter = options.retryAfter ?? 1000;
    this.pollSlice = options.pollSlice ?? 100;
  }

  /**
   * A client following the servers announced in ZooKeeper under `prefix`
   * (`<prefix>/write` for puts, `<prefix>/read` for the rest). It starts
   * with no server; calls made before ZooKeeper has answered wait for it
   * (see ready()), and members() shows what it found.
   *
   * @param {string} connectString ZooKeeper's "host:port[,host:port…]".
   * @param {string} prefix the servers' path prefix (their default is "/kestrel").
   * @param {object} [options] as for the constructor, and zkSessionTimeout (ms).
   */
  static fromZooKeeper(connectString, prefix = '/kestrel', options = {}) {
    const client = new Client(DISCOVERED, options);
    client.discovery = new Discovery(connectString, prefix, ({ write, read }) => client.setMembers(write, read),
      { sessionTimeout: options.zkSessionTimeout ?? 10000 });
    return client;
  }

  /**
   * Waits (at most `timeout` ms) until a discovering client has read its sets
   * once, so that calls made right after fromZooKeeper find the servers.
   */
  async ready() {
    if (!this.discovery || this.discovery.isLoaded) return;
    let timer;
    const waited = new Promise((resolve) => { timer = setTimeout(resolve, clampMs(this.timeout)); });
    try {
      await Promise.race([this.discovery.loaded, waited]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The servers in use now: {write, read}, lists of "host:port". */
  members() {
    return { write: this.writers.map((s) => s.address), read: this.readers.map((s) => s.address) };
  }

  /** Replaces the discovered sets; servers that left are retired. */
  setMembers(write, read) {
    const pool = new Map();
    const take = (address) => {
      const server = pool.get(address) || this.pool.get(address) || new Server(address);
      pool.set(address, server);
      return server;
    };
    this.writers = write.map(take);
    this.readers = read.map(take);
    for (const [address, server] of this.pool) {
      if (pool.has(address)) continue;
      server.retired = true;
      this.release(server);
    }
    this.pool = pool;
  }

  /**
   * Closes a retired server's connection once no call is using it. A call in
   * flight (a get whose items are on their way, say) is left to finish; a
   * consume still settles on the server its items came from, reconnecting
   * if need be, and the connection is closed again afterwards.
   */
  release(server) {
    if (server.retired && server.pending.size === 0) server.drop(new Error('server left'));
  }

  /**
   * `set`'s servers from the next one in turn (`role` names the turn): those
   * up first, then those resting after a failure, as a last resort or
   * (skipResting) only when every server is resting.
   */
  order(set, role, skipResting = false) {
    const n = set.length;
    if (n === 0) return [];
    const start = this.turn[role] % n;
    this.turn[role] = (start + 1) % n;
    const ring = set.map((_, k) => set[(start + k) % n]);
    const t = now();
    const up = ring.filter((s) => s.downUntil <= t);
    if (skipResting && up.length > 0) return up;
    return up.concat(ring.filter((s) => s.downUntil > t));
  }

  connect(server) {
    if (server.stub) return Promise.resolve(server.stub);
    return new Promise((resolve, reject) => {
      const connection = thrift.createConnection(server.host, server.port, {
        transport: thrift.TFramedTransport,
        protocol: thrift.TBinaryProtocol,
        connect_timeout: this.connectTimeout,
      });
      const timer = setTimeout(() => fail(new Error('connect timed out')), clampMs(this.connectTimeout));
      const fail = (err) => {
        clearTimeout(timer);
        server.connection = connection;
        server.drop(err);
        reject(err);
      };
      connection.once('error', fail);
      connection.once('connect', () => {
        clearTimeout(timer);
        connection.removeListener('error', fail);
        const lost = (err) => server.drop(err || new Error('connection closed'));
        connection.on('error', lost);
        connection.on('close', () => lost());
        server.connection = connection;
        server.stub = thrift.createClient(Kestrel, connection);
        resolve(server.stub);
      });
    });
  }

  /** Runs `call(stub, callback)` on `server`; rejects with Refused or Unavailable. */
  async call(server, call, waitMs = 0) {
    let stub;
    try {
      stub = await this.connect(server);
      server.downUntil = 0;
    } catch (err) {
      server.downUntil = now() + this.retryAfter;
      throw new Unavailable(`${server.address}: ${err.message}`);
    }
    return new Promise((resolve, reject) => {
      const fail = (err) => {
        clearTimeout(timer);
        server.pending.delete(fail);
        server.downUntil = now() + this.retryAfter;
        reject(new Unavailable(`${server.address}: ${err.message}`));
      };
      const timer = setTimeout(() => server.drop(new Error('timed out')), clampMs(this.timeout + waitMs));
      server.pending.add(fail);
      try {
        call(stub, (err, result) => {
          clearTimeout(timer);
          server.pending.delete(fail);
          this.release(server);
          if (err instanceof thrift.Thrift.TApplicationException) reject(new Refused(`${server.address}: ${err.message}`));
          else if (err) fail(err);
          else resolve(result);
        });
      } catch (err) {
        // Thrown while encoding (say, an item that is not a Buffer): part of
        // a message may be buffered, so the connection goes; the error is the
        // caller's, not the server's.
        clearTimeout(timer);
        server.pending.delete(fail);
        server.drop(err);
        reject(err);
      }
    });
  }

  async first(call, servers) {
    let last = noServer();
    for (const server of servers) {
      // Left the set since the round began.
      if (server.retired) continue;
      try {
        return await this.call(server, call);
      } catch (err) {
        last = err;
      }
    }
    throw last;
  }

  /**
   * Runs `call` on every server of the read set (the whole list when it is
   * fixed; discovered servers announce reads whenever they take writes).
   * Servers that cannot be reached are passed over unless none can; a
   * refusal from any server is thrown after every server has had the call.
   */
  async all(call) {
    await this.ready();
    const results = [];
    let refused = null;
    let down = noServer();
    for (const server of this.readers) {
      if (server.retired) continue;
      try {
        results.push(await this.call(server, call));
      } catch (err) {
        if (err instanceof Refused) refused = err;
        else if (err instanceof Unavailable) down = err;
        else throw err;
      }
    }
    if (refused) throw refused;
    if (results.length === 0) throw down;
    return results;
  }

  /**
   * Polls the servers in turn until one has items: {server, items}. Servers
   * that are down or refuse are passed over; when no server answered in a
   * round, a refusal is thrown at once (waiting will not change it) and
   * otherwise the round is tried again until the deadline.
   */
  async poll(queue, maxItems, timeoutMs, autoAbortMs) {
    await this.ready();
    const deadline = now() + clampMs(timeoutMs);
    for (;;) {
      let reached = false;
      let refused = null;
      let down = noServer();
      // The set is taken afresh each round, so a wait on an empty set ends
      // early once servers are announced.
      for (const server of this.order(this.readers, 'get', true)) {
        if (server.retired) continue;
        const wait = Math.floor(Math.max(0, Math.min(deadline - now(), this.pollSlice)));
        try {
          const items = await this.call(server, (k, cb) => k.get(queue, maxItems, wait, autoAbortMs, cb), wait);
          reached = true;
          if (items.length > 0) return { server, items };
        } catch (err) {
          if (err instanceof Refused) refused = err;
          else if (err instanceof Unavailable) down = err;
          else throw err;
        }
      }
      if (!reached && refused) throw refused;
      if (now() >= deadline) {
        if (!reached) throw down;
        return { server: null, items: [] };
      }
      if (!reached) await new Promise((r) => setTimeout(r, Math.min(this.pollSlice, deadline - now())));
    }
  }

  /**
   * Confirms or aborts on `server`; a broken connection is replaced and the
   * call made once more (settling twice is harmless: the second call finds
   * nothing open).
   */
  async settle(server, call) {
    try {
      return await this.call(server, call);
    } catch (err) {
      if (!(err instanceof Unavailable)) throw err;
      return this.call(server, call);
    }
  }

  /** Puts `items` (Buffers) on one server; resolves to how many it accepted. */
  async put(queue, items, expiryMs = 0) {
    await this.ready();
    return this.first((k, cb) => k.put(queue, items, clampMs(expiryMs), cb), this.order(this.writers, 'put'));
  }

  /** Up to `maxItems` items, polling the servers for up to `timeoutMs`. */
  async get(queue, maxItems = 1, timeoutMs = 0) {
    const { items } = await this.poll(queue, maxItems, timeoutMs, 0);
    return items.map((i) => i.data);
  }

  /**
   * Runs `await handler(data)` on up to `maxItems` items read reliably.
   * Handled items are confirmed; if the handler throws, that item and the rest
   * of the batch are aborted (back at the head) and the error is rethrown.
   * Resolves to how many items were handled.
   *
   * Confirming and aborting are each tried twice (the second time on a new
   * connection); items they could not settle come back when their auto-abort
   * deadline passes, so a handler may see an item again.
   */
  async consume(queue, handler, { maxItems = 1, timeoutMs = 0, autoAbortMs = 30000 } = {}) {
    const { server, items } = await this.poll(queue, maxItems, timeoutMs, clampMs(Math.max(1, autoAbortMs)));
    const done = [];
    const back = [];
    let error = null;
    for (const item of items) {
      if (error) {
        back.push(item.id);
        continue;
      }
      try {
        await handler(item.data);
        done.push(item.id);
      } catch (err) {
        back.push(item.id);
        error = err;
      }
    }
    let unsettled = null;
    for (const [ids, settle] of [
      [done, (k, cb) => k.confirm(queue, done, cb)],
      [back, (k, cb) => k.abort(queue, back, cb)],
    ]) {
      if (ids.length === 0) continue;
      try {
        await this.settle(server, settle);
      } catch (err) {
        unsettled = unsettled || err;
      }
    }
    if (error) throw error;
    if (unsettled) throw unsettled;
    return done.length;
  }

  /** What every reachable server reports for `queue`, added up. */
  async peek(queue) {
    const infos = await this.all((k, cb) => k.peek(queue, cb));
    const num = (v) => (typeof v === 'number' ? v : Number(v));
    const sum = (key) => infos.reduce((t, i) => t + num(i[key]), 0);
    return new types.QueueInfo({
      head_item: infos.map((i) => i.head_item).find((h) => h != null) ?? null,
      items: sum('items'),
      bytes: sum('bytes'),
      journal_bytes: sum('journal_bytes'),
      age: Math.max(...infos.map((i) => num(i.age))),
      waiters: sum('waiters'),
      open_transactions: sum('open_transactions'),
    });
  }

  /** Removes every item of `queue` on every server. */
  async flush(queue) {
    await this.all((k, cb) => k.flush_queue(queue, cb));
  }

  /** Deletes `queue` on every server. */
  async delete(queue) {
    await this.all((k, cb) => k.delete_queue(queue, cb));
  }

  /** The version of the next reachable server in turn. */
  async version() {
    await this.ready();
    return this.first((k, cb) => k.get_version(cb), this.order(this.readers, 'get'));
  }

  /** The status of the next reachable server in turn. */
  async status() {
    await this.ready();
    return this.first((k, cb) => k.current_status(cb), this.order(this.readers, 'get'));
  }

  /** Sets the status (types.Status.UP, READ_ONLY, QUIESCENT) of every server. */
  async setStatus(status) {
    await this.all((k, cb) => k.set_status(status, cb));
  }

  /** Closes every connection, and the ZooKeeper session if there is one. */
  close() {
    if (this.discovery) this.discovery.close();
    for (const server of new Set([...this.writers, ...this.readers])) server.drop(new Error('client closed'));
  }
}

module.exports = { Client, Unavailable, Refused, Status: types.Status, QueueInfo: types.QueueInfo };
