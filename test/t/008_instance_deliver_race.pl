use strict;
use warnings FATAL => 'all';

# deliver against begin_recovery / complete_recovery under load.  pgbench
# runs four clients; each transaction delivers a normal message to one of
# 20 instances at random, its payload naming the client and the client's
# sequence number, and records msg_id and disposition in a side table in
# the same transaction.  Meanwhile a toggler walks the instances: a window
# on an instance is four transactions, each logged in a table by the
# transaction itself: begin_recovery, an opening recovery message, (four
# windows later) a closing recovery message, complete_recovery.  A consumer
# receives and acks, one message at a time, from instances i1..i10 while
# the load runs; i11..i20 are only drained at the end.
#
# A delivery must read the mode as of its commit, so with the commit times
# (track_commit_timestamp) of the deliveries and of the mode changes:
#  - 'deferred' exactly for the deliveries that committed after a
#    begin_recovery of their instance committed and before the following
#    complete_recovery did; 'ready' for all others; in particular (by msg_id
#    alone) every delivery between a window's two recovery messages;
#  - complete_recovery released at least the window's deferred messages
#    (exactly the normal messages committed before it, on i11..i20, where
#    nothing was received before the end);
#  - after the load no instance is left in recovery, nothing is deferred,
#    every message is receivable;
#  - receiving everything (receive max 1 + ack) yields each message once,
#    with its payload, in msg_id order (per kind on i1..i10, where the
#    consumer also received during recovery windows), and per delivering
#    client in increasing sequence numbers; the counts received equal the
#    counts delivered.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

my $N       = 20;    # instances
my $LIVE    = 10;    # i1..i$LIVE are consumed during the load
my $LAG     = 4;     # the toggler completes a recovery 4 windows after it began
my $SECONDS = 4;     # of pgbench

# workers => 1: the server's default, which this file was written against
# (it calls no handler).
my $node = new_node(
	'inst_race',
	workers => 1,
	conf    => q{
max_connections = 30
# the commit times tell which deliveries committed while an instance recovered
track_commit_timestamp = on
});

$node->safe_psql('postgres', qq{
CREATE EXTENSION recoverable_msg;
SELECT rmsg.create_instance('i' || i) FROM generate_series(1, $N) i;

-- per pgbench client, the last sequence number it used
CREATE TABLE client_counter (client int PRIMARY KEY, n int NOT NULL);
INSERT INTO client_counter SELECT c, 0 FROM generate_series(0, 3) c;

-- every deliver of the load, written in its transaction
CREATE TABLE delivered (
    client int, seq int, instance text NOT NULL,
    msg_id bigint NOT NULL UNIQUE, disposition text NOT NULL,
    PRIMARY KEY (client, seq));

-- the toggler's log, written in its transactions: per window k, 'begin'
-- (with begin_recovery), 'open' (its opening recovery message, delivered
-- after begin committed), 'close' (its closing recovery message, delivered
-- before complete_recovery) and 'complete' (with complete_recovery, and
-- what it released)
CREATE TABLE toggle_log (
    k int, instance text NOT NULL, action text, marker_id bigint UNIQUE,
    disposition text, released int,
    PRIMARY KEY (k, action));

-- every message received, in the order received (rno)
CREATE TABLE received (
    rno bigserial PRIMARY KEY, receiver text, instance text, msg_id bigint,
    kind text, payload text, headers jsonb, deliveries int, acked boolean);

CREATE TABLE stop_flag (what text PRIMARY KEY);

-- The toggler's steps, each one transaction.
CREATE FUNCTION toggle(k int, action text) RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE
	inst text := 'i' || (k % $N + 1);
	d record;
BEGIN
	IF action = 'begin' THEN
		PERFORM rmsg.begin_recovery(inst);
		INSERT INTO toggle_log VALUES (k, inst, action, NULL, NULL, NULL);
	ELSIF action = 'complete' THEN
		INSERT INTO toggle_log
		VALUES (k, inst, action, NULL, NULL, rmsg.complete_recovery(inst, jsonb_build_object('window', k)));
	ELSE
		SELECT * INTO d FROM rmsg.deliver(inst, convert_to(action || ':' || k, 'UTF8'), 'recovery');
		INSERT INTO toggle_log VALUES (k, inst, action, d.msg_id, d.disposition, NULL);
	END IF;
END
\$\$;

-- Opens a window on the next instance (begin, open), closes the one opened
-- $LAG windows before (close, complete), until told to stop; then closes
-- the windows still open.
CREATE PROCEDURE toggler() LANGUAGE plpgsql AS \$\$
DECLARE
	k int := 0;
BEGIN
	LOOP
		EXIT WHEN EXISTS (SELECT 1 FROM stop_flag WHERE what = 'toggler');
		PERFORM toggle(k, 'begin');
		COMMIT;
		PERFORM toggle(k, 'open');
		COMMIT;
		IF k >= $LAG THEN
			PERFORM toggle(k - $LAG, 'close');
			COMMIT;
			PERFORM toggle(k - $LAG, 'complete');
			COMMIT;
		END IF;
		k := k + 1;
		PERFORM pg_sleep(random() * 0.01);
	END LOOP;
	FOR j IN greatest(k - $LAG, 0) .. k - 1 LOOP
		PERFORM toggle(j, 'close');
		COMMIT;
		PERFORM toggle(j, 'complete');
		COMMIT;
	END LOOP;
END
\$\$;

-- Receives one message at a time (max 1) from instances first..last and
-- acks it, recording both; in rounds until told to stop (until_stopped) or
-- until a round receives nothing.
CREATE PROCEDURE consume(p_receiver text, p_first int, p_last int, p_until_stopped boolean)
LANGUAGE plpgsql AS \$\$
DECLARE
	r record;
	mid bigint;
	got_any boolean;
BEGIN
	LOOP
		got_any := false;
		FOR i IN p_first .. p_last LOOP
			mid := NULL;
			FOR r IN SELECT * FROM rmsg.receive('i' || i, 1, '5 minutes') LOOP
				INSERT INTO received (receiver, instance, msg_id, kind, payload, headers, deliveries)
				VALUES (p_receiver, 'i' || i, r.msg_id, r.kind, convert_from(r.payload, 'UTF8'),
				        r.headers, r.deliveries);
				mid := r.msg_id;
			END LOOP;
			COMMIT;
			IF mid IS NOT NULL THEN
				UPDATE received SET acked = rmsg.ack(mid) WHERE msg_id = mid AND acked IS NULL;
				COMMIT;
				got_any := true;
			END IF;
		END LOOP;
		IF p_until_stopped THEN
			EXIT WHEN EXISTS (SELECT 1 FROM stop_flag WHERE what = 'consumer');
			IF NOT got_any THEN
				PERFORM pg_sleep(0.002);
			END IF;
		ELSE
			EXIT WHEN NOT got_any;
		END IF;
	END LOOP;
END
\$\$;
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

#---------------------------------------------------------------------------
# The load
#---------------------------------------------------------------------------

my $toggler = session_open($node, 'toggler');
my $consumer = session_open($node, 'consumer');
my $t_call = session_send($toggler, 'CALL toggler();');
my $c_call = session_send($consumer, "CALL consume('live', 1, $LIVE, true);");

$node->pgbench(
	"--no-vacuum --client=4 --jobs=4 --time=$SECONDS",
	0,
	[ qr{processed: [1-9]\d*}, qr{number of failed transactions: 0 } ],
	[qr{^$}],
	'pgbench: four clients deliver to random instances, no transaction fails',
	{
		'008_deliver' => qq{
\\set inst random(1, $N)
BEGIN;
UPDATE client_counter SET n = n + 1 WHERE client = :client_id RETURNING n AS seq \\gset
INSERT INTO delivered (client, seq, instance, msg_id, disposition)
SELECT :client_id, :seq, 'i' || :inst, d.msg_id, d.disposition
  FROM rmsg.deliver('i' || :inst, convert_to(format('%s:%s', :client_id, :seq), 'UTF8'), 'normal',
                    jsonb_build_object('client', :client_id, 'seq', :seq)) d;
END;
}
	});

sql(q{INSERT INTO stop_flag VALUES ('toggler')});
my ($out, $err) = session_wait($toggler, $t_call, 60);
is($err // 'timed out', '', 'the toggler ran without an error and stopped');
sql(q{INSERT INTO stop_flag VALUES ('consumer')});
($out, $err) = session_wait($consumer, $c_call, 60);
is($err // 'timed out', '', 'the live consumer ran without an error and stopped');
session_kill($toggler);
session_kill($consumer);

my ($n_delivered, $n_deferred, $n_windows, $n_live) = split /\|/, sql(q{
	SELECT (SELECT count(*) FROM delivered),
	       (SELECT count(*) FROM delivered WHERE disposition = 'deferred'),
	       (SELECT count(*) FROM toggle_log WHERE action = 'begin'),
	       (SELECT count(*) FROM received)});
note("delivered $n_delivered normal messages, $n_deferred deferred; "
	  . "$n_windows recovery windows; $n_live messages received during the load");
is(sql('SELECT sum(n) FROM client_counter'), $n_delivered,
	'every pgbench transaction recorded its deliver');
cmp_ok($n_deferred, '>', 0, 'some deliveries were deferred');
cmp_ok($n_delivered - $n_deferred, '>', 0, 'some deliveries were ready');
cmp_ok($n_windows, '>=', $N, 'every instance went through recovery at least once');
cmp_ok($n_live, '>', 0, 'the live consumer received messages during the load');

#---------------------------------------------------------------------------
# Dispositions against the windows
#---------------------------------------------------------------------------

# Each row of the log with the commit time of the transaction that wrote it:
# the toggler's step, or the pgbench transaction that delivered.
my $with = q{
	WITH t AS (
	  SELECT t.*, pg_xact_commit_timestamp(t.xmin) AS ts FROM toggle_log t),
	w AS (
	  SELECT b.k, b.instance, b.ts AS t_begin, c.ts AS t_complete,
	         o.marker_id AS lo, e.marker_id AS hi, c.released
	    FROM t b
	    JOIN t o ON o.k = b.k AND o.action = 'open'
	    JOIN t e ON e.k = b.k AND e.action = 'close'
	    JOIN t c ON c.k = b.k AND c.action = 'complete'
	   WHERE b.action = 'begin'),
	d AS (
	  SELECT d.*, pg_xact_commit_timestamp(d.xmin) AS ts FROM delivered d)};

is( sql($with . q{
	SELECT count(*) FILTER (WHERE o.k IS NULL OR e.k IS NULL OR c.k IS NULL) || '/'
	       || count(*) FILTER (WHERE o.instance <> b.instance OR e.instance <> b.instance
	                           OR c.instance <> b.instance) || '/'
	       || count(*) FILTER (WHERE NOT (b.ts < o.ts AND o.ts < e.ts AND e.ts < c.ts
	                                      AND o.marker_id < e.marker_id)) || '/'
	       || (SELECT count(*) FROM t WHERE marker_id IS NOT NULL AND disposition <> 'ready')
	  FROM t b
	  LEFT JOIN t o ON o.k = b.k AND o.action = 'open'
	  LEFT JOIN t e ON e.k = b.k AND e.action = 'close'
	  LEFT JOIN t c ON c.k = b.k AND c.action = 'complete'
	 WHERE b.action = 'begin'}),
	'0/0/0/0',
	'every window was opened and closed, in order, on its instance; every recovery message was ready');

is( sql($with . q{
	SELECT count(*) FILTER (WHERE d.disposition = 'deferred' AND NOT EXISTS (
	           SELECT 1 FROM w WHERE w.instance = d.instance AND w.t_begin < d.ts AND d.ts < w.t_complete))
	       || ' deferred outside recovery, '
	       || count(*) FILTER (WHERE d.disposition = 'ready' AND EXISTS (
	           SELECT 1 FROM w WHERE w.instance = d.instance AND w.t_begin <= d.ts AND d.ts <= w.t_complete))
	       || ' ready in recovery, '
	       || count(*) FILTER (WHERE d.disposition NOT IN ('ready', 'deferred')) || ' other'
	  FROM d}),
	'0 deferred outside recovery, 0 ready in recovery, 0 other',
	'a deliver was deferred exactly when it committed while its instance was in recovery '
	  . '(after begin_recovery committed, before complete_recovery did)');

is( sql($with . q{
	SELECT count(*) FROM d
	 WHERE d.disposition <> 'deferred'
	   AND EXISTS (SELECT 1 FROM w WHERE w.instance = d.instance AND d.msg_id > w.lo AND d.msg_id < w.hi)}),
	'0',
	'every deliver that came in line between a window\'s opening and closing recovery messages was deferred');

is( sql($with . q{
	SELECT count(*) FROM w
	 WHERE w.released < (SELECT count(*) FROM d
	                      WHERE d.instance = w.instance AND d.disposition = 'deferred'
	                        AND w.t_begin < d.ts AND d.ts < w.t_complete)}),
	'0',
	'each complete_recovery released at least the messages deferred in its window');

is( sql($with . qq{
	SELECT count(*) FROM w
	 WHERE substr(w.instance, 2)::int > $LIVE
	   AND w.released <> (SELECT count(*) FROM d WHERE d.instance = w.instance AND d.ts < w.t_complete)}),
	'0',
	"on i@{[$LIVE + 1]}..i$N (nothing received before the end) each complete_recovery released "
	  . 'every normal message committed before it');

#---------------------------------------------------------------------------
# Nothing stranded
#---------------------------------------------------------------------------

is( sql(q{SELECT count(*) FILTER (WHERE mode <> 'normal') || '/' || sum(deferred) || '/' || sum(in_flight)
	        FROM rmsg.instances}),
	'0/0/0',
	'after the load: no instance in recovery, nothing deferred, nothing in flight');

is( sql(q{
	WITH expect AS (
	  SELECT i.instance,
	         (SELECT count(*) FROM delivered d WHERE d.instance = i.instance)
	       + (SELECT count(*) FROM toggle_log t WHERE t.instance = i.instance AND t.marker_id IS NOT NULL)
	       - (SELECT count(*) FROM received r WHERE r.instance = i.instance) AS n
	    FROM rmsg.instances i)
	SELECT count(*) || ' instances, ' || count(*) FILTER (WHERE e.n <> i.ready) || ' wrong'
	  FROM rmsg.instances i JOIN expect e USING (instance)}),
	"$N instances, 0 wrong",
	'each instance has every message delivered and not yet received ready');

#---------------------------------------------------------------------------
# Receive everything
#---------------------------------------------------------------------------

my $drain_n = sql("CALL consume('drain', 1, $N, false); SELECT count(*) FROM received WHERE receiver = 'drain'");
note("drained $drain_n messages");
is( sql(q{SELECT count(*) FILTER (WHERE mode <> 'normal') || '/' || sum(ready) || '/' || sum(deferred) || '/' || sum(in_flight)
	        FROM rmsg.instances}),
	'0/0/0/0', 'drained: every instance is normal and empty');

is( sql(q{SELECT count(*) FILTER (WHERE kind = 'normal') || '/' || count(*) FILTER (WHERE kind = 'recovery')
	        FROM received}),
	sql(q{SELECT (SELECT count(*) FROM delivered) || '/' || (SELECT count(*) FROM toggle_log WHERE marker_id IS NOT NULL)}),
	'the counts received (normal/recovery) equal the counts delivered');

is( sql(q{
	SELECT (SELECT count(*) FROM delivered d WHERE NOT EXISTS (SELECT 1 FROM received r WHERE r.msg_id = d.msg_id))
	       || ' lost, '
	       || (SELECT count(*) FROM toggle_log t WHERE t.marker_id IS NOT NULL
	                  AND NOT EXISTS (SELECT 1 FROM received r WHERE r.msg_id = t.marker_id))
	       || ' markers lost, '
	       || (SELECT count(*) - count(DISTINCT msg_id) FROM received) || ' received twice, '
	       || (SELECT count(*) FROM received WHERE deliveries <> 1 OR acked IS DISTINCT FROM true)
	       || ' redelivered or not acked'}),
	'0 lost, 0 markers lost, 0 received twice, 0 redelivered or not acked',
	'every message received exactly once, on its first delivery, and acked');

is( sql(q{
	SELECT count(*) FROM received r
	  LEFT JOIN delivered d ON d.msg_id = r.msg_id
	  LEFT JOIN toggle_log t ON t.marker_id = r.msg_id
	 WHERE CASE r.kind
	         WHEN 'normal' THEN d.msg_id IS NULL OR r.instance <> d.instance
	                            OR r.payload <> d.client || ':' || d.seq
	                            OR r.headers IS DISTINCT FROM jsonb_build_object('client', d.client, 'seq', d.seq)
	         WHEN 'recovery' THEN t.marker_id IS NULL OR r.instance <> t.instance
	                            OR r.payload <> t.action || ':' || t.k
	         ELSE true END}),
	'0',
	'each message received from its instance with its payload and headers');

is( sql(qq{
	SELECT count(*) FROM (
	  SELECT msg_id, lag(msg_id) OVER (PARTITION BY instance ORDER BY rno) AS prev
	    FROM received WHERE substr(instance, 2)::int > $LIVE) x
	 WHERE msg_id < prev}),
	'0',
	"i@{[$LIVE + 1]}..i$N: every message received in msg_id order, both kinds together");

is( sql(q{
	SELECT count(*) FROM (
	  SELECT msg_id, lag(msg_id) OVER (PARTITION BY instance, kind ORDER BY rno) AS prev
	    FROM received) x
	 WHERE msg_id < prev}),
	'0',
	'all instances: normal messages received in msg_id order, and recovery messages too');

is( sql(q{
	SELECT count(*) FROM (
	  SELECT d.seq, lag(d.seq) OVER (PARTITION BY r.instance, d.client ORDER BY r.rno) AS prev
	    FROM received r JOIN delivered d USING (msg_id)) x
	 WHERE seq < prev}),
	'0',
	'per instance and delivering client: sequence numbers received in increasing order');

is( sql(q{
	SELECT count(*) FROM rmsg.instances i
	 WHERE rmsg.load_state(i.instance)
	       IS DISTINCT FROM (SELECT jsonb_build_object('window', max(k)) FROM toggle_log t
	                          WHERE t.instance = i.instance)}),
	'0',
	'each instance has the state saved by its last complete_recovery');

$node->stop;
done_testing();
