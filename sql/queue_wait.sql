--
-- queue_wait: rmsg.get with a wait (long polling) in one session.  Waking
-- by another session's commit is tested by the isolation spec get_rollback.
--
\pset null '(null)'

SELECT rmsg.create_queue('wt');

-- a ready message: the get returns at once
SELECT rmsg.put('wt', 'ready'::text) AS w \gset
SELECT clock_timestamp() AS t0 \gset
SELECT msg_id - :w AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('wt', 1, wait => '5 seconds');
SELECT clock_timestamp() - :'t0'::timestamptz < interval '2 seconds' AS returned_at_once;
SELECT rmsg.ack(:w) AS acked;

-- nothing ready: the get waits the whole wait, then returns no rows
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) AS got FROM rmsg.get('wt', 1, wait => '0.3 seconds');
SELECT clock_timestamp() - :'t0'::timestamptz >= interval '0.3 seconds' AS waited_the_wait,
       clock_timestamp() - :'t0'::timestamptz < interval '3 seconds' AS not_much_longer;

-- a zero or NULL wait does not wait
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) AS got FROM rmsg.get('wt', 1, wait => '0 seconds');
SELECT count(*) AS got FROM rmsg.get('wt', 1, wait => NULL);
SELECT clock_timestamp() - :'t0'::timestamptz < interval '2 seconds' AS no_wait;

-- a delayed message that becomes ready during the wait ends it
SELECT clock_timestamp() AS t0 \gset
SELECT rmsg.put('wt', 'delayed'::text, delay => '0.4 seconds') AS d \gset
SELECT msg_id - :d AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('wt', 1, wait => '5 seconds');
SELECT clock_timestamp() - :'t0'::timestamptz >= interval '0.4 seconds' AS waited,
       clock_timestamp() - :'t0'::timestamptz < interval '3 seconds' AS woke_when_ready;

-- so does a lease that runs out during the wait
SELECT rmsg.nack(:d) AS nacked;
SELECT clock_timestamp() AS t0 \gset
SELECT msg_id - :d AS rel, deliveries FROM rmsg.get('wt', 1, '0.4 seconds');
SELECT msg_id - :d AS rel, convert_from(payload, 'UTF8') AS text, deliveries
  FROM rmsg.get('wt', 1, wait => '5 seconds');
SELECT clock_timestamp() - :'t0'::timestamptz >= interval '0.4 seconds' AS waited,
       clock_timestamp() - :'t0'::timestamptz < interval '3 seconds' AS woke_when_ready;
SELECT rmsg.ack(:d) AS acked;

-- a wait that gets fewer than max returns what it found at once
SELECT count(*) AS rows FROM rmsg.put_batch('wt', ARRAY['\x01', '\x02']::bytea[]);
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) AS got FROM rmsg.get('wt', 5, wait => '5 seconds');
SELECT clock_timestamp() - :'t0'::timestamptz < interval '2 seconds' AS returned_at_once;

-- a wait in an explicit READ COMMITTED transaction is fine
BEGIN;
SELECT count(*) AS got FROM rmsg.get('wt', 1, wait => '0.1 seconds');
COMMIT;

-- a wait needs READ COMMITTED: a transaction snapshot would never see new
-- messages (0A000); without a wait the isolation level does not matter
SELECT rmsg.put('wt', 'rr'::text) AS r \gset
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM rmsg.get('wt', 1, wait => '1 second');
ROLLBACK;
\set VERBOSITY sqlstate
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM rmsg.get('wt', 1, wait => '1 second');
ROLLBACK;
\set VERBOSITY default
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT msg_id - :r AS rel, convert_from(payload, 'UTF8') AS text
  FROM rmsg.get('wt', 1, wait => '0 seconds');
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT msg_id - :r AS rel, convert_from(payload, 'UTF8') AS text FROM rmsg.get('wt');
SELECT rmsg.ack(:r) AS acked;
COMMIT;
SET default_transaction_isolation = 'repeatable read';
SELECT count(*) AS got FROM rmsg.get('wt', 1, wait => '1 second');
RESET default_transaction_isolation;

-- rmsg.max_wait is a ceiling on every wait: an operator sets it for the
-- roles that come through a pooler in transaction mode, where a waiting
-- get holds a server connection.  A wait of 30 s then ends after 0.2 s
-- with nothing, as if it had asked for 0.2 s; shorter waits are kept.
SET rmsg.max_wait = '200ms';
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) AS got FROM rmsg.get('wt', 1, wait => '30 seconds');
SELECT clock_timestamp() - :'t0' < interval '10 seconds' AS cut_short,
       clock_timestamp() - :'t0' >= interval '200 milliseconds' AS waited_the_ceiling;
-- a message that is ready is still taken at once, whatever the ceiling
SELECT rmsg.put('wt', 'capped'::text) IS NOT NULL AS put;
SELECT msg_id AS mid, convert_from(payload, 'UTF8') AS text, receipt AS rc
  FROM rmsg.get('wt', 1, wait => '30 seconds') \gset
SELECT :'text' AS text, rmsg.ack(:mid, :rc) AS acked;
RESET rmsg.max_wait;
-- the roles it guards cannot lift it (42501); negative values are refused
CREATE ROLE rmsg_wait_tenant;
SET ROLE rmsg_wait_tenant;
SET rmsg.max_wait = 0;
RESET ROLE;
SET rmsg.max_wait = -1;
DROP ROLE rmsg_wait_tenant;

-- clean up
SELECT rmsg.drop_queue('wt');
SELECT count(*) AS queues, (SELECT count(*) FROM rmsg.message) AS messages FROM rmsg.queue;
