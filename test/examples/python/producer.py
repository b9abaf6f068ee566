#!/usr/bin/python3
"""Puts COUNT messages on a recoverable_msg queue, with psycopg 3.

    producer.py QUEUE COUNT [PAUSE]

Each message is the JSON {"n": i} for i = 1..COUNT, so that a consumer (and
test/examples/run_examples.sh) can tell every message apart.  The messages
go in batches of 100, one rmsg.put_batch and one transaction per batch: a
batch is on the queue entirely or, if the producer dies before its commit,
not at all.  PAUSE (seconds, 0 by default) spreads the batches over time;
test/examples/run_examples.sh uses it so that the consumers' long polls are
woken by the producer's commits.

The connection comes from the libpq environment (PGHOST, PGPORT,
PGDATABASE, PGUSER).  Run it with Debian's /usr/bin/python3, for which the
package python3-psycopg is installed.
"""

import json
import sys
import time

import psycopg
from psycopg.types.json import Jsonb

BATCH = 100


def main():
    queue, count = sys.argv[1], int(sys.argv[2])
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    put = 0
    # psycopg 3 prepares a statement on the server once it has run 5 times
    # on a connection.  That is right for a direct connection; behind
    # PgBouncer in transaction mode the next transaction may run on another
    # server connection that never saw the statement, so connect with
    # prepare_threshold=None there.
    with psycopg.connect(autocommit=True) as conn:
        for first in range(1, count + 1, BATCH):
            payloads = [json.dumps({"n": n}).encode()
                        for n in range(first, min(first + BATCH, count + 1))]
            # In a real producer the application's own writes would share
            # this transaction: the messages exist exactly when they commit.
            with conn.transaction():
                ids = conn.execute(
                    "SELECT * FROM rmsg.put_batch(%s, %s, %s)",
                    (queue, payloads, Jsonb({"producer": "python"}))).fetchall()
            put += len(ids)
            time.sleep(pause)
    print(f"python producer: put {put} messages on {queue}", flush=True)


if __name__ == "__main__":
    main()
