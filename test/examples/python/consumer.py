#!/usr/bin/python3
"""Handles the messages of a recoverable_msg queue exactly once, with psycopg 3.

    consumer.py QUEUE NAME [--die-before-commit]

The loop: a long poll (rmsg.get with a wait) leases up to 10 messages,
then one work transaction records each message in the application's table
`handled` and acks it with the receipt of its lease, and commits.  The
record and the ack commit together or not at all, so a message is handled
exactly once however often it is delivered:

- the consumer dies before the commit: neither happened; the lease runs
  out and another consumer gets the message again;
- the lease ran out during the work and another consumer took the message:
  the ack with the old receipt returns false, and this consumer undoes its
  record of that message (a savepoint per message).

SIGTERM or Ctrl-C stop it after the batch in hand.  With --die-before-commit
it kills itself (SIGKILL, no goodbye to the server) in its first work
transaction, after recording its batch and before the commit, having printed
the msg_ids it held; test/examples/run_examples.sh checks that others handle
them once their leases run out.

The connection comes from the libpq environment (PGHOST, PGPORT,
PGDATABASE, PGUSER).  Run it with Debian's /usr/bin/python3, for which the
package python3-psycopg is installed.
"""

import json
import os
import signal
import sys

import psycopg

BATCH = 10              # messages per get
VISIBILITY = "5 seconds"  # longer than a batch's work takes
WAIT = "1 second"       # short, so that a stop request is seen soon

stopping = False


class LeaseLost(Exception):
    """The ack found the lease gone: another consumer may hold the message."""


def on_stop(_signum, _frame):
    global stopping
    stopping = True


def handle(conn, name, msg_id, payload, deliveries):
    """The application's work on one message: here, a row in `handled`."""
    n = json.loads(payload)["n"]
    conn.execute(
        "INSERT INTO handled (msg_id, n, consumer, deliveries) VALUES (%s, %s, %s, %s)",
        (msg_id, n, name, deliveries))


def main():
    queue, name = sys.argv[1], sys.argv[2]
    die_before_commit = "--die-before-commit" in sys.argv[3:]
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    handled = lost = batches = 0
    # Autocommit: each get commits its leases at once, and the work
    # transaction below is opened explicitly.  A waiting get needs READ
    # COMMITTED, the default.  psycopg 3 prepares statements it runs often
    # (prepare_threshold, 5 by default): fine on a direct connection; behind
    # PgBouncer in transaction mode pass prepare_threshold=None.
    with psycopg.connect(autocommit=True) as conn:
        while not stopping:
            rows = conn.execute(
                "SELECT msg_id, payload, deliveries, receipt"
                "  FROM rmsg.get(%s, max => %s, visibility => %s, wait => %s)",
                (queue, BATCH, VISIBILITY, WAIT)).fetchall()
            if not rows:
                continue
            batches += 1
            with conn.transaction():                    # the work transaction
                for msg_id, payload, deliveries, receipt in rows:
                    try:
                        with conn.transaction():        # a savepoint
                            handle(conn, name, msg_id, payload, deliveries)
                            acked = conn.execute("SELECT rmsg.ack(%s, %s)",
                                                 (msg_id, receipt)).fetchone()[0]
                            if not acked:
                                raise LeaseLost()       # undoes this message's work
                        handled += 1
                    except LeaseLost:
                        lost += 1
                if die_before_commit:
                    print("held", " ".join(str(r[0]) for r in rows), flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
    print(f"python consumer {name}: handled {handled} in {batches} batches, "
          f"{lost} leases lost", flush=True)


if __name__ == "__main__":
    main()
