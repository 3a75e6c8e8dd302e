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
 *   const client = new Client(['127.0.0.1:2229']);
 *   await client.put('jobs', [Buffer.from('hello')]);
 *   await client.consume('jobs', async (item) => console.log(item), { timeoutMs: 1000 });
 *   client.close();
 */
const thrift = require('thrift');
const { Kestrel, types } = require('./gen');

/** Milliseconds on the wire are an i32; timers take no more either. */
const MAX_MS = 2 ** 31 - 1;
const clampMs = (ms) => Math.min(Math.max(0, ms), MAX_MS);
/** A clock that never jumps: deadlines and retry intervals use it. */
const now = () => performance.now();

/** No server could be reached. */
class Unavailable extends Error {}
/** A server refused the call (bad queue name, read-only server, ...). */
class Refused extends Error {}

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
    this.servers = [].concat(servers).map((s) => new Server(s));
    if (this.servers.length === 0) throw new Error('no servers given');
    this.next = 0;
    this.connectTimeout = options.connectTimeout ?? 1000;
    this.timeout = options.timeout ?? 5000;
    this.retryAfter = options.retryAfter ?? 1000;
    this.pollSlice = options.pollSlice ?? 100;
  }

  /**
   * Servers from the next one in turn: those up first, then those resting
   * after a failure, as a last resort or (skipResting) only when every server
   * is resting.
   */
  order(skipResting = false) {
    const n = this.servers.length;
    const start = this.next % n;
    this.next = (this.next + 1) % n;
    const ring = this.servers.map((_, k) => this.servers[(start + k) % n]);
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

  async first(call, servers = this.order()) {
    let last = new Unavailable('no server tried');
    for (const server of servers) {
      try {
        return await this.call(server, call);
      } catch (err) {
        last = err;
      }
    }
    throw last;
  }

  /**
   * Runs `call` on every server. Servers that cannot be reached are passed
   * over unless none can; a refusal from any server is thrown after every
   * server has had the call.
   */
  async all(call) {
    const results = [];
    let refused = null;
    let down = null;
    for (const server of this.servers) {
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
    const deadline = now() + clampMs(timeoutMs);
    for (;;) {
      let reached = false;
      let refused = null;
      let down = null;
      for (const server of this.order(true)) {
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
  put(queue, items, expiryMs = 0) {
    return this.first((k, cb) => k.put(queue, items, clampMs(expiryMs), cb));
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
  version() {
    return this.first((k, cb) => k.get_version(cb));
  }

  /** The status of the next reachable server in turn. */
  status() {
    return this.first((k, cb) => k.current_status(cb));
  }

  /** Sets the status (types.Status.UP, READ_ONLY, QUIESCENT) of every server. */
  async setStatus(status) {
    await this.all((k, cb) => k.set_status(status, cb));
  }

  close() {
    for (const server of this.servers) server.drop(new Error('client closed'));
  }
}

module.exports = { Client, Unavailable, Refused, Status: types.Status, QueueInfo: types.QueueInfo };
