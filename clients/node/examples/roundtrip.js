#!/usr/bin/env node
'use strict';
// Puts and gets 64-byte items and prints the round trips per second:
//   node clients/node/examples/roundtrip.js 127.0.0.1:2229 5
const { Client } = require('..');

async function main() {
  const server = process.argv[2] || '127.0.0.1:2229';
  const seconds = Number(process.argv[3] || 5);
  const client = new Client([server]);
  await client.flush('client_roundtrip');
  const item = Buffer.alloc(64, 'x');
  const begun = Date.now();
  let n = 0;
  while (Date.now() - begun < seconds * 1000) {
    await client.put('client_roundtrip', [item]);
    const got = await client.get('client_roundtrip');
    if (got.length !== 1) throw new Error('item missing');
    n += 1;
  }
  const rate = n / ((Date.now() - begun) / 1000);
  console.log(`node client: ${n} round trips (put + get, 64 B) in ${seconds} s: ${rate.toFixed(0)} round trips/s`);
  client.close();
}

main().catch((err) => { console.error(err); process.exit(1); });
