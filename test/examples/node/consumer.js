#!/usr/bin/env node
// Handles the messages of a recoverable_msg queue exactly once, with
// node-postgres (pg).
//
//     node consumer.js QUEUE NAME [--die-before-commit]
//
// The loop: a long poll (rmsg.get with a wait) leases up to 10 messages, then
// one work transaction records each message in the application's table
// `handled` and acks it with the receipt of its lease, and commits.  The
// record and the ack commit together or not at all, so a message is handled
// exactly once however often it is delivered:
//
// - the consumer dies before the commit: neither happened; the lease runs out
//   and another consumer gets the message again;
// - the lease ran out during the work and another consumer took the message:
//   the ack with the old receipt returns false, and this consumer undoes its
//   record of that message (a savepoint per message).
//
// SIGTERM or Ctrl-C stop it after the batch in hand.  With --die-before-commit
// it kills itself (SIGKILL, no goodbye to the server) in its first work
// transaction, after recording its batch and before the commit, having
// printed the msg_ids it held; test/examples/run_examples.sh checks that
// others handle them once their leases run out.
//
// The connection comes from the libpq-style environment (PGHOST, PGPORT,
// PGDATABASE, PGUSER).  `npm ci` in this folder installs pg.  pg sends every
// query unnamed unless given a name, so it works behind PgBouncer in
// transaction mode as it is.
'use strict';

const { Client } = require('pg');

const BATCH = 10;               // messages per get
const VISIBILITY = '5 seconds'; // longer than a batch's work takes
const WAIT = '1 second';        // short, so that a stop request is seen soon

let stopping = false;
process.on('SIGTERM', () => { stopping = true; });
process.on('SIGINT', () => { stopping = true; });

// The application's work on one message: here, a row in `handled`.
async function handle(client, name, msg) {
  const { n } = JSON.parse(msg.payload.toString('utf8'));
  await client.query(
    'INSERT INTO handled (msg_id, n, consumer, deliveries) VALUES ($1, $2, $3, $4)',
    [msg.msg_id, n, name, msg.deliveries]);
}

async function main() {
  const [queue, name, ...flags] = process.argv.slice(2);
  const dieBeforeCommit = flags.includes('--die-before-commit');
  const client = new Client();
  await client.connect();
  let handled = 0;
  let lost = 0;
  let batches = 0;
  while (!stopping) {
    // Outside a transaction block each statement commits on its own: the
    // get's leases are committed before the work starts.  msg_id and receipt
    // are bigints, which pg hands over as strings; they go back as they came.
    const { rows } = await client.query(
      `SELECT msg_id, payload, deliveries, receipt
         FROM rmsg.get($1, max => $2, visibility => $3, wait => $4)`,
      [queue, BATCH, VISIBILITY, WAIT]);
    if (rows.length === 0) continue;
    batches++;
    await client.query('BEGIN');                        // the work transaction
    try {
      for (const msg of rows) {
        await client.query('SAVEPOINT message');
        await handle(client, name, msg);
        // The casts pick ack(bigint, bigint) over ack(bigint[], bigint[]):
        // pg's parameters have no type of their own.
        const ack = await client.query('SELECT rmsg.ack($1::bigint, $2::bigint) AS acked',
                                       [msg.msg_id, msg.receipt]);
        if (ack.rows[0].acked) {
          await client.query('RELEASE SAVEPOINT message');
          handled++;
        } else {
          // The lease is gone: another consumer may hold the message now.
          await client.query('ROLLBACK TO SAVEPOINT message');
          lost++;
        }
      }
      if (dieBeforeCommit) {
        console.log('held ' + rows.map((r) => r.msg_id).join(' '));
        // console.log to a pipe is asynchronous: let it drain first.
        await new Promise((resolve) => process.stdout.write('', resolve));
        process.kill(process.pid, 'SIGKILL');
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK');
      throw err;
    }
  }
  await client.end();
  console.log(`node consumer ${name}: handled ${handled} in ${batches} batches, ${lost} leases lost`);
}

main().catch((err) => {
  console.error(`node consumer: ${err.message}`);
  process.exit(1);
});
