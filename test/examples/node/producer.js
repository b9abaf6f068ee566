#!/usr/bin/env node
// Puts COUNT messages on a recoverable_msg queue, with node-postgres (pg).
//
//     node producer.js QUEUE COUNT [PAUSE]
//
// Each message is the JSON {"n": i} for i = 1..COUNT, so that a consumer (and
// test/examples/run_examples.sh) can tell every message apart.  The messages
// go in batches of 100, one rmsg.put_batch and one transaction per batch: a
// batch is on the queue entirely or, if the producer dies before its commit,
// not at all.  PAUSE (seconds, 0 by default) spreads the batches over time;
// test/examples/run_examples.sh uses it so that the consumers' long polls are
// woken by the producer's commits.
//
// The connection comes from the libpq-style environment (PGHOST, PGPORT,
// PGDATABASE, PGUSER), which pg reads too; a PGHOST that is a directory is a
// Unix socket's.  `npm ci` in this folder installs pg.
'use strict';

const { Client } = require('pg');

const BATCH = 100;

async function main() {
  const [queue, countArg, pauseArg] = process.argv.slice(2);
  const count = Number(countArg);
  const pauseMs = Number(pauseArg || 0) * 1000;
  const client = new Client();
  await client.connect();
  let put = 0;
  try {
    for (let first = 1; first <= count; first += BATCH) {
      const payloads = [];
      for (let n = first; n < Math.min(first + BATCH, count + 1); n++) {
        payloads.push(Buffer.from(JSON.stringify({ n })));
      }
      // In a real producer the application's own writes would share this
      // transaction: the messages exist exactly when they commit.  pg sends
      // an array of Buffers as a bytea[].
      await client.query('BEGIN');
      const res = await client.query('SELECT * FROM rmsg.put_batch($1, $2, $3)',
                                     [queue, payloads, { producer: 'node' }]);
      await client.query('COMMIT');
      put += res.rowCount;
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
  } finally {
    await client.end();
  }
  console.log(`node producer: put ${put} messages on ${queue}`);
}

main().catch((err) => {
  console.error(`node producer: ${err.message}`);
  process.exit(1);
});
