'use strict';
// The Node.js client against real servers on loopback.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');

const { Client, Refused, Status } = require('..');
const { start } = require('./server');

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'kestrel-node-'));

test('binary items round trip', async () => {
  const server = await start(tmp());
  const c = new Client([server.address]);
  try {
    const item = Buffer.from([0, 255, 10, 13, 0, 1]);
    assert.strictEqual(await c.put('rt', [item, Buffer.from('second')]), 2);
    assert.deepStrictEqual(await c.get('rt', 5), [item, Buffer.from('second')]);
    assert.strictEqual((await c.peek('rt')).items, 0);
    assert.ok((await c.version()).length > 0);
    assert.strictEqual(await c.status(), Status.UP);
  } finally {
    c.close();
    await server.stop();
  }
});

test('a get times out empty', async () => {
  const server = await start(tmp());
  const c = new Client([server.address]);
  try {
    const begun = Date.now();
    assert.deepStrictEqual(await c.get('empty', 1, 300), []);
    assert.ok(Date.now() - begun >= 300);
  } finally {
    c.close();
    await server.stop();
  }
});

test('consume confirms handled items and puts back failed ones', async () => {
  const server = await start(tmp());
  const c = new Client([server.address]);
  try {
    await c.put('work', [Buffer.from('one'), Buffer.from('two')]);
    await assert.rejects(c.consume('work', async () => { throw new Error('boom'); }), /boom/);
    let info = await c.peek('work');
    assert.deepStrictEqual([info.items, info.open_transactions], [2, 0]);
    const seen = [];
    assert.strictEqual(await c.consume('work', async (item) => seen.push(item.toString()), { maxItems: 5 }), 2);
    assert.deepStrictEqual(seen, ['one', 'two']);
    info = await c.peek('work');
    assert.deepStrictEqual([info.items, info.open_transactions], [0, 0]);
    assert.strictEqual(await c.consume('work', async () => {}), 0);
  } finally {
    c.close();
    await server.stop();
  }
});

test('with two servers, one stopped mid-run, nothing acknowledged is lost', async () => {
  const dirA = tmp();
  const a = await start(dirA);
  const b = await start(tmp());
  const acked = [];
  let taken = [];
  const c = new Client([a.address, b.address], { retryAfter: 200 });
  try {
    for (let i = 0; i < 200; i++) {
      if (i === 100) await a.stop();
      const item = Buffer.from(`item-${String(i).padStart(3, '0')}`);
      if ((await c.put('two', [item])) === 1) acked.push(item.toString());
    }
    assert.strictEqual(acked.length, 200);
    taken = (await c.get('two', 1, 500)).map((g) => g.toString());
    assert.strictEqual(taken.length, 1);
  } finally {
    c.close();
  }
  const a2 = await start(dirA);
  const reader = new Client([a2.address, b.address]);
  try {
    const found = [];
    for (;;) {
      const got = await reader.get('two', 100);
      if (got.length === 0) break;
      found.push(...got.map((g) => g.toString()));
    }
    // Every acknowledged item exactly once: found, or taken above.
    assert.deepStrictEqual([...found, ...taken].sort(), [...acked].sort());
  } finally {
    reader.close();
    await a2.stop();
    await b.stop();
  }
});

test('a server that refuses reads does not stop gets from the others', async () => {
  const a = await start(tmp());
  const b = await start(tmp());
  const onlyA = new Client([a.address]);
  const onlyB = new Client([b.address]);
  const both = new Client([a.address, b.address]);
  try {
    await onlyB.put('q', [Buffer.from('one'), Buffer.from('two')]);
    await onlyA.setStatus(Status.QUIESCENT);
    // Round-robin: each server comes first once; a refuses, b answers.
    assert.deepStrictEqual(await both.get('q'), [Buffer.from('one')]);
    assert.deepStrictEqual(await both.get('q'), [Buffer.from('two')]);
    assert.deepStrictEqual(await both.get('q'), []);
    // With only refusing servers the refusal comes back without waiting out
    // the timeout.
    const begun = Date.now();
    await assert.rejects(onlyA.get('q', 1, 30000), Refused);
    assert.ok(Date.now() - begun < 10000);
  } finally {
    for (const c of [onlyA, onlyB, both]) c.close();
    await a.stop();
    await b.stop();
  }
});
