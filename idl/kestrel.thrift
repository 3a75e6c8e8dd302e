/*
 * The Kestrel queue service: the wire contract of this server.
 *
 * Wire-compatible with Kestrel 2.4: same method names, argument field ids and
 * types. Serve and call it with the framed transport (each message prefixed by
 * its 4-byte big-endian length) and the binary protocol. The server accepts
 * strict (versioned) and old unversioned message headers and writes strict ones.
 *
 * Errors: the service declares no exceptions (as in Kestrel). A refused call
 * (a bad queue name, a server status that forbids the operation, a disk error)
 * is answered with a TApplicationException whose message says why; the
 * connection stays usable. An unknown method is answered with
 * TApplicationException UNKNOWN_METHOD, undecodable arguments with
 * PROTOCOL_ERROR.
 *
 * Queue names: 1 to 255 bytes, none of '/', '.', '~', whitespace or control
 * bytes. A '+' makes a fanout child ("parent+child"). Queues are created on
 * first put, get or peek.
 */

namespace rs kestrel
namespace py kestrel
namespace js kestrel
namespace java net.lag.kestrel.thrift
namespace go kestrel

/* One item returned by get. */
struct Item {
  /* The item's bytes, exactly as they were put. */
  1: binary data

  /*
   * The transaction id to pass to confirm or abort when the item was read with
   * auto_abort_msec > 0; 0 when the item was removed outright. Ids are unique
   * across all queues of a server and are never reused, not even across
   * restarts.
   */
  2: i64 id
}

/* A snapshot of one queue, returned by peek. */
struct QueueInfo {
  /* The item at the head of the queue, if there is one (it is not removed). */
  1: optional binary head_item

  /* Items waiting in the queue (open transactions excluded), in memory or on disk. */
  2: i64 items

  /* Total payload bytes of those items. */
  3: i64 bytes

  /* Bytes the queue's journal occupies on disk (0 for a memory-only queue). */
  4: i64 journal_bytes

  /* Age in milliseconds of the oldest item in the queue; 0 when it is empty. */
  5: i64 age

  /* Readers currently blocked in a get on this queue. */
  6: i32 waiters

  /* Items read with a transaction and neither confirmed nor aborted yet. */
  7: i32 open_transactions
}

/* The server's status: what it lets clients do. */
enum Status {
  /* Never returned by this server; refused by set_status. */
  NOT_CONFIGURED = 0

  /* Refuses reads and writes; confirm and abort of open items still work. */
  QUIESCENT = 1

  /* Refuses writes (put, flush, delete); reads still work. */
  READ_ONLY = 2

  /* Everything allowed. The default. */
  UP = 3
}

service Kestrel {
  /*
   * Appends items to the tail of queue_name, in order, creating the queue if
   * needed. With expiration_msec > 0 each item expires that many milliseconds
   * after the put; an expired item is never returned. Returns how many items
   * were accepted: the count stops at the first item the queue refuses (full,
   * or larger than its item size limit). An acknowledged item is in the
   * journal at the queue's configured durability level.
   */
  i32 put(1: string queue_name, 2: list<binary> items, 3: i32 expiration_msec = 0)

  /*
   * Removes up to max_items items from the head of queue_name. With
   * timeout_msec > 0 the call waits up to that long until max_items items
   * have been collected, then returns what it has (possibly nothing); with 0
   * it returns at once with what is available. max_items <= 0 returns an empty
   * list. One call returns at most about 16 MiB of item data (always at least
   * one item), however large max_items is.
   *
   * With auto_abort_msec > 0 the items are opened rather than removed: each
   * carries a non-zero id to confirm (remove for good) or abort (put back at
   * the head), from any connection. An item neither confirmed nor aborted
   * within auto_abort_msec after the call returned goes back to the head of
   * its queue by itself. With auto_abort_msec = 0 the items are removed and
   * their ids are 0.
   */
  list<Item> get(1: string queue_name, 2: i32 max_items, 3: i32 timeout_msec = 0, 4: i32 auto_abort_msec = 0)

  /*
   * Removes for good the open items of queue_name with these ids. Returns how
   * many of the ids were open; unknown ids are ignored.
   */
  i32 confirm(1: string queue_name, 2: set<i64> ids)

  /*
   * Puts the open items of queue_name with these ids back at the head of the
   * queue, in their original order. Returns how many of the ids were open;
   * unknown ids are ignored.
   */
  i32 abort(1: string queue_name, 2: set<i64> ids)

  /* Describes queue_name without removing anything (creates the queue if needed). */
  QueueInfo peek(1: string queue_name)

  /* Removes every item of queue_name; open transactions are untouched. Never creates a queue. */
  void flush_queue(1: string queue_name)

  /* Flushes every queue. */
  void flush_all_queues()

  /* Removes queue_name and its journal entirely. Never creates a queue. */
  void delete_queue(1: string queue_name)

  /* The server's current status. */
  Status current_status()

  /* Changes the server's status. NOT_CONFIGURED is refused. */
  void set_status(1: Status status)

  /* The server's version, e.g. "0.1.0". */
  string get_version()
}
