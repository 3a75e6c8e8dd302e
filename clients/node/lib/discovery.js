'use strict';
/**
 * Finds kestrel servers through ZooKeeper, the way Kestrel 2.4 servers
 * announce themselves: ephemeral `member_…` znodes under `<prefix>/write`
 * (servers taking puts) and `<prefix>/read` (servers serving gets), each
 * holding a Finagle server-set JSON record. The client reads the Thrift
 * endpoint of each member and follows both sets with child watches.
 *
 * ZooKeeper watches fire once, so every change is answered by reading the
 * children again, which sets the next watch. A set whose path does not exist
 * yet is empty and gets an existence watch instead, so its creation is seen.
 * When ZooKeeper cannot be reached the last membership seen stays in force:
 * the servers themselves may well be fine.
 */
const util = require('util');
const zookeeper = require('node-zookeeper-client');

// NODE_DEBUG=kestrel shows why members were skipped and how sessions went.
const debug = util.debuglog('kestrel');
const { NO_NODE } = zookeeper.Exception;

/**
 * The "host:port" of a member's Thrift endpoint, or null for a member the
 * client cannot use: data that is not JSON, a status other than ALIVE (a
 * Finagle server set may announce members that are not serving), or no
 * Thrift endpoint (the server does not listen for Thrift).
 */
function memberAddress(data) {
  let record;
  try {
    record = JSON.parse(data.toString('utf8'));
  } catch (err) {
    return null;
  }
  if (record === null || typeof record !== 'object' || record.status !== 'ALIVE') return null;
  const thrift = record.additionalEndpoints && record.additionalEndpoints.thrift;
  if (!thrift || typeof thrift.host !== 'string' || thrift.host === '') return null;
  if (!Number.isInteger(thrift.port) || thrift.port <= 0 || thrift.port > 65535) return null;
  return `${thrift.host}:${thrift.port}`;
}

/** ZooKeeper's callbacks as a promise: [error, result]. */
const settled = (start) => new Promise((resolve) => start((err, result) => resolve([err, result])));

/** One watched set of members (`<prefix>/read` or `<prefix>/write`). */
class MemberSet {
  constructor(discovery, path) {
    this.discovery = discovery;
    this.path = path;
    this.addresses = [];
    this.loaded = false;
    this.reading = false;
    this.again = false;
    // One function for every watch on this path: the library keeps one
    // watcher per distinct function, so re-reading never piles them up.
    this.watcher = () => this.refresh();
  }

  /**
   * Reads the members and sets the next watch. Reads never overlap: a change
   * seen while one runs asks for one more read once it ends, so the last
   * read always starts after the last change.
   */
  refresh() {
    if (this.reading) {
      this.again = true;
      return;
    }
    this.reading = true;
    this.again = false;
    const zk = this.discovery.zk;
    this.read(zk)
      .then((addresses) => {
        // A read from a session that has since been replaced, or after
        // close, is stale.
        if (addresses && zk === this.discovery.zk && !this.discovery.closed) {
          this.loaded = true;
          this.update(addresses);
          this.discovery.checkLoaded();
        }
      })
      .catch((err) => debug('%s: reading members failed: %s', this.path, err && err.message))
      .finally(() => {
        this.reading = false;
        if (this.again && !this.discovery.closed) this.refresh();
      });
  }

  /** The members' addresses, or null when ZooKeeper did not answer (keep the last ones). */
  async read(zk) {
    const [err, children] = await settled((cb) => zk.getChildren(this.path, this.watcher, cb));
    if (err && err.getCode() === NO_NODE) {
      const [missing, stat] = await settled((cb) => zk.exists(this.path, this.watcher, cb));
      if (missing) return this.lost(missing);
      // Created between the two calls: read it again.
      if (stat) {
        this.again = true;
        return null;
      }
      return [];
    }
    if (err) return this.lost(err);
    const found = await Promise.all(children.map(async (child) => {
      const [failed, data] = await settled((cb) => zk.getData(`${this.path}/${child}`, cb));
      // A member that left since the listing is simply gone.
      if (failed) return failed.getCode() === NO_NODE ? null : failed;
      const address = memberAddress(data || Buffer.alloc(0));
      if (!address) debug('%s/%s: skipped (not JSON, not ALIVE, or no thrift endpoint)', this.path, child);
      return address;
    }));
    const failure = found.find((f) => f instanceof Error);
    if (failure) return this.lost(failure);
    return [...new Set(found.filter((a) => typeof a === 'string'))].sort();
  }

  /** ZooKeeper failed us: keep the last membership; reconnecting reads again. */
  lost(err) {
    debug('%s: ZooKeeper did not answer (%s); keeping the last members', this.path, err.message);
    return null;
  }

  update(addresses) {
    if (addresses.join(',') === this.addresses.join(',')) return;
    this.addresses = addresses;
    this.discovery.changed();
  }
}

/**
 * Closes a ZooKeeper client. The library's close() waits for ZooKeeper to
 * answer the close request; when it cannot be reached the socket (and with
 * it the process) would stay until a connect timeout, so after a moment it
 * is let go.
 */
function release(zk) {
  zk.close();
  setTimeout(() => {
    const socket = zk.connectionManager && zk.connectionManager.socket;
    if (socket && !socket.destroyed) socket.destroy();
  }, 1000).unref();
}

class Discovery {
  /**
   * @param {string} connectString ZooKeeper's "host:port[,host:port…][/chroot]".
   * @param {string} prefix the servers' path prefix, say "/kestrel".
   * @param {function} onChange called with {write, read} (sorted "host:port"
   *   lists) whenever either set changes.
   * @param {object} [options] sessionTimeout (ms) of the ZooKeeper session.
   */
  constructor(connectString, prefix, onChange, { sessionTimeout = 10000 } = {}) {
    if (typeof prefix !== 'string' || !prefix.startsWith('/')) throw new Error(`prefix must start with '/': ${prefix}`);
    const base = prefix.replace(/\/+$/, '');
    this.connectString = connectString;
    this.sessionTimeout = sessionTimeout;
    this.onChange = onChange;
    this.closed = false;
    this.write = new MemberSet(this, `${base}/write`);
    this.read = new MemberSet(this, `${base}/read`);
    this.zk = null;
    // Settles once both sets have been read (or on close): calls made
    // before then wait for it rather than fail for want of servers.
    this.isLoaded = false;
    this.loaded = new Promise((resolve) => {
      this.markLoaded = () => {
        this.isLoaded = true;
        resolve();
      };
    });
    this.open();
  }

  checkLoaded() {
    if (this.write.loaded && this.read.loaded) this.markLoaded();
  }

  /** Starts a ZooKeeper session; sets are read once it is connected. */
  open() {
    // retries: 0: a read that fails is not retried in place (the library
    // would only wait); the next 'connected' reads every set again, and
    // until then the last membership holds.
    const zk = zookeeper.createClient(this.connectString, { sessionTimeout: this.sessionTimeout, spinDelay: 500, retries: 0 });
    this.zk = zk;
    zk.on('connected', () => {
      if (zk !== this.zk || this.closed) return;
      debug('ZooKeeper session 0x%s connected', zk.getSessionId().toString('hex'));
      // After a reconnect the library sets the old watches again, but a read
      // that failed while disconnected set none: read everything.
      this.write.refresh();
      this.read.refresh();
    });
    zk.on('disconnected', () => {
      if (zk === this.zk && !this.closed) debug('ZooKeeper disconnected; keeping the last members');
    });
    // An expired session is closed for good (its watches went with it): start
    // a new one, which reads everything again once connected.
    zk.on('expired', () => {
      if (zk !== this.zk || this.closed) return;
      debug('ZooKeeper session expired; starting a new one');
      release(zk);
      this.open();
    });
    zk.connect();
  }

  changed() {
    this.onChange(this.members());
  }

  members() {
    return { write: [...this.write.addresses], read: [...this.read.addresses] };
  }

  /** Ends the ZooKeeper session (the server learns at once, not at expiry). */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.markLoaded();
    release(this.zk);
  }
}

module.exports = { Discovery, memberAddress };
