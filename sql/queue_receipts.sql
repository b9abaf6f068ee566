--
-- queue_receipts: every lease comes with a receipt, and ack, nack and
-- extend given one act only while that lease holds.  A consumer whose lease
-- ran out, and whose message another consumer took since, changes nothing
-- with its stale receipt: false, counted in rmsg.queues and rmsg.log_stats.
-- The receipt-less forms act on whatever lease there is, as in 1.0.
--
\i test/lib/regress_helpers.sql
SELECT rmsg.create_queue('rc');
CREATE TEMP TABLE stale_before AS SELECT stale_receipts FROM rmsg.log_stats;

-- a get hands out a receipt per message, different for each
SELECT rmsg.put('rc', 'one'::text) AS one \gset
SELECT rmsg.put('rc', 'two'::text) AS two \gset
CREATE TEMP TABLE first_lease AS
SELECT msg_id, receipt FROM rmsg.get('rc', 2, visibility => '0.2 seconds');
SELECT count(*) AS leased, count(DISTINCT receipt) AS receipts, bool_and(receipt IS NOT NULL) AS all_set
  FROM first_lease;
SELECT receipt AS r1 FROM first_lease WHERE msg_id = :one \gset
SELECT receipt AS r2 FROM first_lease WHERE msg_id = :two \gset

-- a wrong receipt changes nothing, even while the lease runs
SELECT rmsg.ack(:one, :r1 + 1) AS ack_wrong, rmsg.extend(:one, '1 minute', :r1 + 1) AS extend_wrong,
       rmsg.nack(:one, NULL, :r1 + 1) AS nack_wrong;
SELECT count(*) AS still_in_flight FROM rmsg.lease WHERE msg_id = :one AND lease_until > now();

-- the first consumer's leases run out; a second consumer takes both
SELECT pg_sleep(0.3);
CREATE TEMP TABLE second_lease AS
SELECT msg_id, receipt FROM rmsg.get('rc', 2, visibility => '1 minute');
SELECT count(*) AS retaken, bool_and(s.receipt <> f.receipt) AS new_receipts
  FROM second_lease s JOIN first_lease f USING (msg_id);

-- the first consumer's receipts are stale: nothing it does counts
SELECT rmsg.ack(:one, :r1) AS stale_ack, rmsg.nack(:two, NULL, :r2) AS stale_nack,
       rmsg.extend(:two, '1 hour', :r2) AS stale_extend,
       rmsg.ack(ARRAY[:one, :two]::bigint[], ARRAY[:r1, :r2]::bigint[]) AS stale_ack_many;
SELECT count(*) AS both_still_leased_by_the_second
  FROM rmsg.lease l JOIN second_lease s USING (msg_id)
 WHERE l.deliveries = 2 AND l.lease_until > now() + interval '50 seconds';
SELECT stale_receipts FROM rmsg.queues WHERE queue = 'rc';

-- the second consumer's receipts hold: extend, then ack both at once
SELECT receipt AS s1 FROM second_lease WHERE msg_id = :one \gset
SELECT receipt AS s2 FROM second_lease WHERE msg_id = :two \gset
SELECT rmsg.extend(:one, '2 minutes', :s1) AS extended;
SELECT rmsg.ack(ARRAY[:one, :two]::bigint[], ARRAY[:s1, :s2]::bigint[]) AS acked;
-- an ack of a message already gone is stale too
SELECT rmsg.ack(:one, :s1) AS gone;

-- a nack ends the lease and its receipt: the old receipt acks nothing after
SELECT rmsg.put('rc', 'three'::text) AS three \gset
SELECT receipt AS r3 FROM rmsg.get('rc') \gset
SELECT rmsg.nack(:three, NULL, :r3) AS nacked;
SELECT rmsg.ack(:three, :r3) AS ack_after_nack;
-- the receipt-less forms still act on whatever lease there is
SELECT count(*) AS got FROM rmsg.get('rc');
SELECT rmsg.extend(:three, '1 minute') AS extended, rmsg.ack(:three) AS acked;

-- a NULL receipt acks without one; NULL elements of the arrays are skipped
-- (msg_ids) or ack without a receipt; arrays of other lengths: 2202E
SELECT rmsg.put('rc', 'four'::text) AS four \gset
SELECT count(*) FROM rmsg.get('rc');
SELECT rmsg.ack(:four, NULL) AS acked_without_receipt;
SELECT rmsg.ack(NULL::bigint, 1) IS NULL AS null_msg_id;
SELECT rmsg.put('rc', 'five'::text) AS five \gset
SELECT count(*) FROM rmsg.get('rc');
SELECT rmsg.ack(ARRAY[NULL, :five]::bigint[], ARRAY[1, NULL]::bigint[]) AS acked;
SELECT sqlstate_of($$SELECT rmsg.ack(ARRAY[1, 2]::bigint[], ARRAY[1]::bigint[])$$);
SELECT sqlstate_of($$SELECT rmsg.ack(ARRAY[[1, 2]]::bigint[], ARRAY[[1, 2]]::bigint[])$$);

-- the counters: nine stale receipts of this queue's messages (the array
-- form counts each message); the ack of a message already gone counts in the
-- total only, since its queue is not known any more
SELECT q.stale_receipts AS queue_stale, l.stale_receipts - b.stale_receipts AS total_stale
  FROM rmsg.queues q, rmsg.log_stats l, stale_before b WHERE q.queue = 'rc';

-- instances: receive hands out receipts too.  A nack without a delay ends
-- the lease and its receipt; one with a delay keeps the lease until then, to
-- hold the instance's line in order, and its receipt with it
SELECT rmsg.create_instance('rc-1');
SELECT msg_id AS im FROM rmsg.deliver('rc-1', 'i'::bytea) \gset
SELECT receipt AS ir FROM rmsg.receive('rc-1', visibility => '1 minute') \gset
SELECT rmsg.extend(:im, '2 minutes', :ir + 1) AS wrong, rmsg.extend(:im, '2 minutes', :ir) AS extended;
SELECT rmsg.ack(:im, :ir + 1) AS wrong_ack;
SELECT rmsg.ack(:im, :ir) AS acked;
SELECT msg_id AS im2 FROM rmsg.deliver('rc-1', 'j'::bytea) \gset
SELECT receipt AS ir2, instance FROM rmsg.receive_any() \gset
SELECT :'instance' AS instance, rmsg.nack(:im2, NULL, :ir2) AS nacked,
       rmsg.ack(:im2, :ir2) AS ack_after_nack;
SELECT receipt AS ir3 FROM rmsg.receive('rc-1') \gset
SELECT :ir3 <> :ir2 AS new_receipt, rmsg.nack(:im2, '1 minute', :ir3) AS nacked_with_delay,
       rmsg.extend(:im2, '2 minutes', :ir3) AS still_held, rmsg.ack(:im2, :ir3) AS acked;

-- An ack is one WAL record of the heap: the delete.  The message version an
-- ack sees is most often the newest, and is deleted straight away; only
-- when it changed since (a lease, a nack) is the newest locked and looked
-- at again first.  pg_walinspect lists the records the ack wrote.
CREATE EXTENSION pg_walinspect;
SELECT rmsg.put('rc', 'one record'::text) AS wm \gset
SELECT receipt AS wr FROM rmsg.get('rc', 1, '1 minute') \gset
SELECT pg_current_wal_insert_lsn() AS before_ack \gset
SELECT rmsg.ack(:wm, :wr) AS acked;
SELECT record_type, count(*) AS records
  FROM pg_get_wal_records_info(:'before_ack', pg_current_wal_flush_lsn())
 WHERE resource_manager = 'Heap'
   AND block_ref LIKE '%/' || pg_relation_filenode('rmsg.message') || ' fork%'
 GROUP BY 1 ORDER BY 1;
DROP EXTENSION pg_walinspect;

SELECT rmsg.drop_instance('rc-1'), rmsg.drop_queue('rc');
-- every lease went with its message
SELECT count(*) AS leases FROM rmsg.lease;
