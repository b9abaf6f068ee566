use strict;
use warnings FATAL => 'all';

# The background workers' life: what they show, how they come and go, and
# that neither a killed worker nor a crashed server loses or repeats a
# handler's work.  A handler's work, its message's lease and its ack commit
# together in the worker's transaction, so whatever kills the worker before
# that commit must leave the message to be handled again, and nothing
# committed may be handled twice.
#  1. start-up: rmsg.worker has a row per worker, the same pids as
#     pg_stat_activity's 'recoverable_msg worker' rows, idle in 'postgres';
#  2. rmsg.database pointing at a database without the extension: the
#     workers restart there and wait for it; once it is created they handle
#     its queues; pointed back, they come back to 'postgres'; pointing at a
#     database that does not exist: the failed connection is logged once
#     per worker, which then waits for the database;
#  3. a reload of rmsg.retry_delay changes the backoff without a restart, and
#     one of rmsg.worker_naptime the maintenance's schedule;
#  4. an idle worker terminated: back with a new pid after the restart
#     time, the other worker untouched, counters kept, handling again;
#  5. a worker terminated in a handler (pg_sleep): it stops at once, the
#     handler's work rolls back, the message waits, and is handled once
#     after the restart;
#  6. a crash in a handler after 50 committed ones: nothing committed is
#     handled again, the interrupted message is handled once;
#  7. a crash in the middle of a batch of 20: none of it had committed, all
#     of it is handled once after the restart;
#  8. deferred instance messages across a crash: not handled in recovery,
#     before or after the crash; after complete_recovery all once, in order;
#  9. a fast shutdown while a handler sleeps 60 s takes seconds;
# 10. rmsg.worker_count = 0: no workers, messages wait; workers back, they
#     are handled once.
#
# One worker for sections 5 to 9, so that no second worker takes over a
# message while the test holds it; two for the others.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgNode;

# set_worker_count below appends a later rmsg.worker_count, which overrides
# this one at the next start.
my $node = new_node(
	'worker_life',
	workers => 2,
	conf    => q{
synchronous_commit = on
rmsg.worker_naptime = '1s'
rmsg.retry_delay = '1s'
autovacuum = off
});

#---------------------------------------------------------------------------
# Helpers
#---------------------------------------------------------------------------

sub sql
{
	my ($q, $db) = @_;
	return $node->safe_psql($db // 'postgres', $q);
}

# Polls until $q returns $expected ('t' by default); a test named $what.
sub wait_ok
{
	my ($q, $expected, $what, $db) = @_;
	ok($node->poll_query_until($db // 'postgres', $q, $expected // 't'), $what)
	  or diag("last result: " . $node->safe_psql($db // 'postgres', $q));
}

# Polls $q (every 50 ms) until it returns $expected or $timeout seconds
# pass; returns the seconds it took, or undef on timeout.
sub wait_secs
{
	my ($q, $expected, $timeout) = @_;
	my $start = time;
	while (1)
	{
		my ($ret, $out) = $node->psql('postgres', $q);
		return time - $start if $ret == 0 && $out eq $expected;
		return undef if time - $start > $timeout;
		usleep(50_000);
	}
}

my $worker_pids_sql = q{SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '')
  FROM pg_stat_activity WHERE backend_type = 'recoverable_msg worker'};

# "worker:state:database" of each slot, in slot order
my $slots_sql = q{SELECT string_agg(worker || ':' || state || ':' || coalesce(database, '-'), ' ' ORDER BY worker)
  FROM rmsg.worker};

sub slot_pids { return sql(q{SELECT string_agg(coalesce(pid::text, '-'), ',' ORDER BY worker) FROM rmsg.worker}); }

# Waits until every one of $n slots runs in $db in state $state, with pids
# that pg_stat_activity shows for that database.
sub wait_workers
{
	my ($n, $state, $db, $what) = @_;
	wait_ok(
		qq{SELECT count(*) = $n AND bool_and(w.pid IS NOT NULL AND w.state = '$state' AND w.database = '$db'
		                                    AND a.datname IS NOT DISTINCT FROM '$db')
		     FROM rmsg.worker w
		     LEFT JOIN pg_stat_activity a ON a.pid = w.pid AND a.backend_type = 'recoverable_msg worker'},
		't', $what);
}

# msg_ids of handled rows for these ids: "id:count" where count != 1, and
# how many distinct ids were handled: exactly once each gives "n ok".
sub handled_once
{
	my (@ids) = @_;
	my $list = join(',', @ids);
	my $bad = sql(qq{SELECT string_agg(msg_id || ':' || n, ' ' ORDER BY msg_id)
	                   FROM (SELECT msg_id, count(*) n FROM handled WHERE msg_id IN ($list) GROUP BY msg_id) s
	                  WHERE n <> 1});
	my $n = sql(qq{SELECT count(DISTINCT msg_id) FROM handled WHERE msg_id IN ($list)});
	return $bad eq '' ? "$n ok" : "$n, not once: $bad";
}

sub handled_count
{
	my (@ids) = @_;
	return sql('SELECT count(*) FROM handled WHERE msg_id IN (' . join(',', @ids) . ')');
}

sub put
{
	my ($queue, $payload) = @_;
	return sql(qq{SELECT rmsg.put('$queue', '$payload'::text)});
}

# The pid of the worker sleeping in a handler, once there is one.
sub wait_sleeping_worker
{
	my ($what) = @_;
	my $q = q{SELECT pid FROM pg_stat_activity
	           WHERE backend_type = 'recoverable_msg worker' AND wait_event = 'PgSleep'};
	ok($node->poll_query_until('postgres', "SELECT EXISTS ($q)"), $what);
	return sql("$q LIMIT 1");
}

sub queue_counts
{
	my ($queue) = @_;
	return sql(qq{SELECT ready || '/' || in_flight || '/' || delayed || '/' || dead FROM rmsg.queues WHERE queue = '$queue'});
}

sub set_worker_count
{
	my ($n) = @_;
	$node->append_conf('postgresql.conf', "rmsg.worker_count = $n");
}

#---------------------------------------------------------------------------
# Schema: one table of handled messages, flags that make handlers wait
#---------------------------------------------------------------------------

sql(q{
	CREATE EXTENSION recoverable_msg;
	CREATE TABLE handled (seq bigserial PRIMARY KEY, msg_id bigint NOT NULL, payload text);
	CREATE TABLE flag (name text PRIMARY KEY);

	-- Payload 'sleep:N:...': one pg_sleep(N) while flag 'sleep' is set.
	-- Payload '...:hold': sleeps in steps of 0.1 s while flag 'hold' is set
	-- (at most 90 s), so the test can let it go after a crash even if the
	-- restarted worker has taken the message again already.
	CREATE FUNCTION work(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE
		t text := convert_from(p, 'UTF8');
		t0 timestamptz := clock_timestamp();
	BEGIN
		INSERT INTO handled (msg_id, payload) VALUES (id, t);
		IF t LIKE 'sleep:%' AND EXISTS (SELECT 1 FROM flag WHERE name = 'sleep') THEN
			PERFORM pg_sleep(split_part(t, ':', 2)::float8);
		END IF;
		IF t LIKE '%:hold' THEN
			WHILE EXISTS (SELECT 1 FROM flag WHERE name = 'hold')
			      AND clock_timestamp() < t0 + interval '90 seconds' LOOP
				PERFORM pg_sleep(0.1);
			END LOOP;
		END IF;
	END $$;

	CREATE FUNCTION fail(p bytea) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		RAISE EXCEPTION 'boom %', convert_from(p, 'UTF8');
	END $$;

	CREATE FUNCTION conv(inst text, p bytea, kind text, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO handled (msg_id, payload) VALUES (id, inst || '/' || kind || '/' || convert_from(p, 'UTF8'));
	END $$;

	SELECT rmsg.create_queue('q');
	SELECT rmsg.subscribe('q', 'work(bytea, jsonb, bigint)');
});

#---------------------------------------------------------------------------
# 1. Start-up and views
#---------------------------------------------------------------------------

wait_workers(2, 'idle', 'postgres', 'start-up: both workers idle in postgres, their pids in pg_stat_activity');
is(sql($slots_sql), '0:idle:postgres 1:idle:postgres', 'rmsg.worker: one row per worker, slots 0 and 1');
is(sql(q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM rmsg.worker}), sql($worker_pids_sql),
	'rmsg.worker pids are exactly the recoverable_msg workers of pg_stat_activity');
is( sql(q{SELECT count(*) FROM pg_stat_activity
           WHERE backend_type = 'recoverable_msg worker' AND datname = 'postgres'}),
	'2', 'pg_stat_activity: two recoverable_msg workers connected to postgres');
is(sql(q{SELECT bool_and(started_at IS NOT NULL AND started_at <= now()) FROM rmsg.worker}),
	't', 'started_at set');

my $id = put('q', 'hello');
wait_ok("SELECT count(*) FROM handled WHERE msg_id = $id", '1', 'a message put in the subscribed queue is handled');
wait_ok(q{SELECT ready + in_flight + delayed FROM rmsg.queues WHERE queue = 'q'}, '0', 'and acked');
is(sql('SELECT sum(processed) FROM rmsg.worker'), '1', 'rmsg.worker counts one handler call');

#---------------------------------------------------------------------------
# 2. rmsg.database without the extension, then with it, then back
#---------------------------------------------------------------------------

sql('CREATE DATABASE other');
my $old_pids = sql($worker_pids_sql);
my $log_offset = -s $node->logfile;
sql(q{ALTER SYSTEM SET rmsg.database = 'other'});
sql('SELECT pg_reload_conf()');

wait_workers(2, 'waiting for the extension', 'other',
	'rmsg.database = other: both workers restarted in other, waiting for the extension');
my $other_pids = sql($worker_pids_sql);
my %old = map { $_ => 1 } split /,/, $old_pids;
is(scalar(grep { $old{$_} } split /,/, $other_pids), 0, 'the workers in other have new pids');
is(sql($slots_sql), '0:waiting for the extension:other 1:waiting for the extension:other',
	'rmsg.worker, read in postgres: both waiting for the extension in other');
ok($node->log_contains(qr/recoverable_msg worker 0 restarting: rmsg.database changed from "postgres" to "other"/, $log_offset),
	'the log says why the workers restarted');

$id = put('q', 'while away');
sleep(2);
is(sql("SELECT count(*) FROM handled WHERE msg_id = $id"), '0',
	'a message in postgres waits while the workers serve other');

sql(q{
	CREATE EXTENSION recoverable_msg;
	CREATE TABLE other_handled (msg_id bigint, payload text);
	CREATE FUNCTION other_work(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE sql
	  AS $$ INSERT INTO other_handled VALUES (id, convert_from(p, 'UTF8')) $$;
	SELECT rmsg.create_queue('oq');
	SELECT rmsg.subscribe('oq', 'other_work(bytea, jsonb, bigint)');
}, 'other');
my $oid = sql(q{SELECT rmsg.put('oq', 'in other'::text)}, 'other');
wait_ok("SELECT count(*) FROM other_handled WHERE msg_id = $oid AND payload = 'in other'", '1',
	'with the extension created in other, its subscribed queue is handled there', 'other');
wait_ok(q{SELECT ready + in_flight + delayed FROM rmsg.queues WHERE queue = 'oq'}, '0',
	'and the message is acked in other', 'other');
wait_workers(2, 'idle', 'other', 'rmsg.worker: both idle in other');
is(sql($worker_pids_sql), $other_pids, 'the workers did not restart when the extension appeared');

sql(q{ALTER SYSTEM RESET rmsg.database});
sql('SELECT pg_reload_conf()');
wait_ok("SELECT count(*) FROM handled WHERE msg_id = $id", '1',
	'back to postgres: the message that waited is handled');
wait_workers(2, 'idle', 'postgres', 'back to postgres: both workers idle there');
my %in_other = map { $_ => 1 } split /,/, $other_pids;
my $pids = sql($worker_pids_sql);
is(scalar(grep { $in_other{$_} } split /,/, $pids), 0, 'with new pids again');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'recoverable_msg worker' AND datname = 'other'}),
	'0', 'no worker left in other');

#---------------------------------------------------------------------------
# 2b. rmsg.database naming a database that does not exist: each worker's
#     connection fails once (FATAL); the next one waits, connected to no
#     database, says why once, and connects when the database is created.
#---------------------------------------------------------------------------

$log_offset = -s $node->logfile;
sql(q{ALTER SYSTEM SET rmsg.database = 'nowhere'});
sql('SELECT pg_reload_conf()');
wait_ok(q{SELECT count(*) FROM rmsg.worker WHERE state = 'waiting for its database' AND database = 'nowhere'},
	'2', 'rmsg.database = nowhere: both workers wait for the database');
sleep(12);
my $log = slurp_file($node->logfile, $log_offset);
my $fatals = () = $log =~ /FATAL:  database "nowhere" does not exist/g;
is($fatals, 2, 'in 12 s the failed connection is logged once per worker, not every 5 s');
my $waits = () = $log =~ /recoverable_msg worker \d waits for database "nowhere", which does not exist/g;
is($waits, 2, 'and each worker says once that it waits');
is(sql(q{SELECT count(*) FROM rmsg.worker WHERE state = 'waiting for its database' AND pid IS NOT NULL}),
	'2', 'still waiting, running');
sql('CREATE DATABASE nowhere');
wait_workers(2, 'waiting for the extension', 'nowhere',
	'once the database is created, both workers connect to it');
sql(q{ALTER SYSTEM RESET rmsg.database});
sql('SELECT pg_reload_conf()');
wait_workers(2, 'idle', 'postgres', 'back to postgres');
sql('DROP DATABASE nowhere');

#---------------------------------------------------------------------------
# 3. A reload of rmsg.retry_delay: the new backoff applies, no restart
#---------------------------------------------------------------------------

sql(q{
	SELECT rmsg.create_queue('failing', max_deliveries => 100);
	SELECT rmsg.subscribe('failing', 'fail(bytea)');
});
$pids = sql($worker_pids_sql);

sub reload_setting
{
	my ($name, $value, $shown) = @_;
	sql("ALTER SYSTEM SET $name = '$value'");
	sql('SELECT pg_reload_conf()');
	$node->poll_query_until('postgres', "SHOW $name", $shown)
	  or die "$name not reloaded";
	usleep(500_000);    # the postmaster passes the SIGHUP on to the workers
}

# (below rmsg.max_retry_delay, 10 min by default)
reload_setting('rmsg.retry_delay', '5min', '5min');
my $a_id = put('failing', 'a');
wait_ok("SELECT l.deliveries = 1 AND m.visible_at > now() FROM rmsg.message m JOIN rmsg.lease l USING (msg_id) WHERE msg_id = $a_id", 't',
	'retry_delay 5min: the failed message is given back delayed');
is( sql(qq{SELECT visible_at > now() + interval '4 minutes' AND visible_at < now() + interval '301 seconds'
             FROM rmsg.message WHERE msg_id = $a_id}),
	't', 'its retry is five minutes away')
  or diag(sql("SELECT visible_at, now() FROM rmsg.message WHERE msg_id = $a_id"));
is(queue_counts('failing'), '0/0/1/0', 'rmsg.queues: delayed');
ok($node->log_contains(qr/handler of queue "failing" failed on message $a_id \(delivery 1 of 100\): boom a/),
	'the failure is logged');

reload_setting('rmsg.retry_delay', '200ms', '200ms');
my $b_id = put('failing', 'b');
my $took = wait_secs("SELECT deliveries >= 4 FROM rmsg.lease WHERE msg_id = $b_id", 't', 20);
ok(defined $took && $took < 6,
	'retry_delay 200ms after a reload: a new failing message is tried 4 times within seconds (0.2+0.4+0.8 s of backoff)')
  or diag('took ' . ($took // 'too long'));
is(sql("SELECT deliveries FROM rmsg.lease WHERE msg_id = $a_id"), '1',
	'the message given back under the old delay still waits for it');
is(sql($worker_pids_sql), $pids, 'the reloads restarted no worker');
like(sql(q{SELECT target || ' ' || errors || ' ' || last_error FROM rmsg.handlers WHERE target = 'failing'}),
	qr/^failing ([5-9]|\d\d+) boom b$/, 'rmsg.handlers: the failures counted, the last error kept');
sql(q{
	SELECT rmsg.unsubscribe('failing');
	ALTER SYSTEM RESET rmsg.retry_delay;
	SELECT pg_reload_conf();
});

# A reload of rmsg.worker_naptime: a long one holds the maintenance off, a
# short one brings it forward at once (not an hour later).
$node->poll_query_until('postgres', 'SELECT maintained_at IS NOT NULL FROM rmsg.worker WHERE worker = 0')
  or die 'no maintenance under worker_naptime 1s';
reload_setting('rmsg.worker_naptime', '1h', '1h');
usleep(1_500_000);    # a maintenance already due under the old naptime comes and goes
my $maintained = sql('SELECT maintained_at FROM rmsg.worker WHERE worker = 0');
usleep(2_500_000);
is(sql('SELECT maintained_at FROM rmsg.worker WHERE worker = 0'), $maintained,
	'worker_naptime 1h after a reload: no maintenance meanwhile');
reload_setting('rmsg.worker_naptime', '1s', '1s');
$took = wait_secs("SELECT maintained_at > '$maintained' FROM rmsg.worker WHERE worker = 0", 't', 20);
ok(defined $took && $took < 5,
	'worker_naptime back to 1s: the next maintenance comes within seconds')
  or diag('took ' . ($took // 'too long'));

#---------------------------------------------------------------------------
# 4. An idle worker terminated
#---------------------------------------------------------------------------

wait_workers(2, 'idle', 'postgres', 'both workers idle before the termination');
my ($pid0, $pid1) = split /,/, slot_pids();
my $processed_before = sql('SELECT sum(processed) FROM rmsg.worker');
my $t0 = time;
is(sql("SELECT pg_terminate_backend($pid0)"), 't', 'worker 0 terminated');
my $gone = wait_secs(q{SELECT state || coalesce(pid::text, '') FROM rmsg.worker WHERE worker = 0}, 'stopped', 5);
ok(defined $gone, 'rmsg.worker shows worker 0 stopped, pid NULL, until it comes back');
my $back = wait_secs(q{SELECT pid IS NOT NULL AND state = 'idle' FROM rmsg.worker WHERE worker = 0}, 't', 15);
my $back_after = time - $t0;
ok(defined $back && $back_after < 10, 'worker 0 is back and idle within 10 s')
  or diag("back after $back_after s");
cmp_ok($back_after, '>=', 4, 'not before the restart time (5 s)');
my ($new0, $new1) = split /,/, slot_pids();
isnt($new0, $pid0, 'worker 0 has a new pid');
is($new1, $pid1, 'worker 1 was not touched');
is(sql(qq{SELECT count(*) FROM pg_stat_activity WHERE pid = $new0 AND backend_type = 'recoverable_msg worker'}),
	'1', 'the new pid is a recoverable_msg worker in pg_stat_activity');
is(sql('SELECT sum(processed) FROM rmsg.worker'), $processed_before, 'the counters survived the worker restart');
my @ids = map { put('q', "after terminate $_") } 1 .. 5;
wait_ok('SELECT count(*) FROM handled WHERE msg_id IN (' . join(',', @ids) . ')', '5',
	'messages put after the restart are handled');
is(handled_once(@ids), '5 ok', 'once each');

#---------------------------------------------------------------------------
# One worker from here on
#---------------------------------------------------------------------------

set_worker_count(1);
$node->restart;
wait_workers(1, 'idle', 'postgres', 'restarted with rmsg.worker_count = 1: one worker, idle');
is(sql('SELECT count(*) FROM rmsg.worker'), '1', 'rmsg.worker has one row');

#---------------------------------------------------------------------------
# 5. A worker terminated while its handler sleeps
#---------------------------------------------------------------------------

sql(q{INSERT INTO flag VALUES ('sleep')});
my $s_id = put('q', 'sleep:30:terminated');
my $spid = wait_sleeping_worker('the handler sleeps in the worker');
is(sql(q{SELECT current FROM rmsg.worker WHERE state = 'handling'}), 'queue q', 'rmsg.worker: handling queue q');
$t0 = time;
sql("SELECT pg_terminate_backend($spid)");
$gone = wait_secs("SELECT count(*) FROM pg_stat_activity WHERE pid = $spid", '0', 35);
ok(defined $gone && $gone < 3, 'the worker stops at once, not after its 30 s sleep')
  or diag('gone after ' . ($gone // 'more than 35') . ' s');
sql(q{DELETE FROM flag WHERE name = 'sleep'});
is(handled_count($s_id), '0', "the handler's insert rolled back");
is(sql("SELECT count(*) FROM rmsg.message WHERE msg_id = $s_id"), '1', 'the message is still there');
is(queue_counts('q'), '1/0/0/0', 'ready again: the lease rolled back too');
is(sql(q{SELECT state FROM rmsg.worker}), 'stopped', 'rmsg.worker: stopped until the restart');
wait_ok("SELECT count(*) FROM handled WHERE msg_id = $s_id", '1', 'after the restart the message is handled');
wait_ok(q{SELECT ready + in_flight + delayed FROM rmsg.queues WHERE queue = 'q'}, '0', 'and acked');
isnt(slot_pids(), $spid, 'by a new worker process');
usleep(1_500_000);
is(handled_once($s_id), '1 ok', 'exactly once');
is(sql(q{SELECT count(*) FROM rmsg.dead_message}), '0', 'nothing dead-lettered');

#---------------------------------------------------------------------------
# 6. A crash in a handler, after 50 committed ones
#---------------------------------------------------------------------------

sub crash_and_restart
{
	my $offset = -s $node->logfile;
	$node->stop('immediate');
	$node->start;
	return $node->log_contains(qr/not properly shut down; automatic recovery in progress/, $offset);
}

my @fast = split /\n/, sql(q{SELECT * FROM rmsg.put_batch('q', ARRAY(SELECT convert_to('fast ' || i, 'UTF8') FROM generate_series(1, 50) i))});
is(scalar(@fast), 50, '50 fast messages put');
wait_ok('SELECT count(*) FROM handled WHERE msg_id IN (' . join(',', @fast) . ')', '50', 'the 50 are handled');
sql(q{INSERT INTO flag VALUES ('hold')});
my $slow = put('q', 'slow:hold');
wait_sleeping_worker('the slow message\'s handler holds');
is(handled_count($slow), '0', 'its work is not committed');
ok(crash_and_restart(), 'crash in the handler: the server went through crash recovery');
sql(q{DELETE FROM flag WHERE name = 'hold'});
wait_ok("SELECT count(*) FROM handled WHERE msg_id = $slow", '1', 'after the restart the slow message is handled');
wait_ok(q{SELECT ready + in_flight + delayed FROM rmsg.queues WHERE queue = 'q'}, '0', 'the queue is empty');
usleep(1_500_000);
is(handled_once(@fast), '50 ok', 'every fast message handled exactly once: committed work not repeated');
is(handled_once($slow), '1 ok', 'the slow message handled exactly once');
is(queue_counts('q'), '0/0/0/0', 'rmsg.queues: nothing left, nothing dead');
is(sql(q{SELECT count(*) FROM rmsg.dead_message}), '0', 'nothing in rmsg.dead_message');
is(sql('SELECT count(*) FROM rmsg.worker'), '1', 'rmsg.worker: the worker is back after the crash');

#---------------------------------------------------------------------------
# 7. A crash in the middle of a batch
#---------------------------------------------------------------------------

sql(q{
	SELECT rmsg.create_queue('bq');
	SELECT rmsg.subscribe('bq', 'work(bytea, jsonb, bigint)', batch => 20);
	INSERT INTO flag VALUES ('hold');
});
my @batch = split /\n/, sql(q{SELECT * FROM rmsg.put_batch('bq', ARRAY(SELECT convert_to('b' || i || CASE i WHEN 10 THEN ':hold' ELSE '' END, 'UTF8') FROM generate_series(1, 20) i))});
is(scalar(@batch), 20, 'a batch of 20 put in one transaction');
wait_sleeping_worker('the handler holds on the 10th message of the batch');
my $list = join(',', @batch);
is(sql("SELECT count(*) FROM (SELECT 1 FROM rmsg.message WHERE msg_id IN ($list) FOR UPDATE SKIP LOCKED) s"),
	'0', 'the worker holds all 20 in its transaction');
is(handled_count(@batch), '0', 'none of the batch has committed');
ok(crash_and_restart(), 'crash in the middle of the batch: crash recovery');
sql(q{DELETE FROM flag WHERE name = 'hold'});
wait_ok("SELECT count(*) FROM handled WHERE msg_id IN ($list)", '20', 'after the restart the whole batch is handled');
wait_ok(q{SELECT ready + in_flight + delayed FROM rmsg.queues WHERE queue = 'bq'}, '0', 'and acked');
usleep(1_500_000);
is(handled_once(@batch), '20 ok', 'each message of the batch exactly once: none lost, none doubled');
is( sql("SELECT string_agg(payload, ' ' ORDER BY seq) FROM handled WHERE msg_id IN ($list)"),
	join(' ', map { "b$_" . ($_ == 10 ? ':hold' : '') } 1 .. 20),
	'in msg_id order');
is(queue_counts('bq'), '0/0/0/0', 'rmsg.queues: bq empty, nothing dead');

#---------------------------------------------------------------------------
# 8. Deferred instance messages across a crash
#---------------------------------------------------------------------------

sub deliver
{
	my ($inst, $payload, $kind) = @_;
	my ($mid, $disp) = split /\|/,
	  sql(qq{SELECT msg_id, disposition FROM rmsg.deliver('$inst', convert_to('$payload', 'UTF8'), '$kind')});
	return ($mid, $disp);
}

sql(q{
	SELECT rmsg.set_handler('conv-', 'conv(text, bytea, text, jsonb, bigint)');
	SELECT rmsg.create_instance('conv-1');
	SELECT rmsg.begin_recovery('conv-1');
});
my (@deferred, @disp);
for my $i (1 .. 5)
{
	my ($mid, $d) = deliver('conv-1', "n$i", 'normal');
	push @deferred, $mid;
	push @disp, $d;
}
is(join(',', @disp), 'deferred,deferred,deferred,deferred,deferred', 'in recovery: five normal messages deferred');
my ($r1) = deliver('conv-1', 'r1', 'recovery');
wait_ok("SELECT count(*) FROM handled WHERE msg_id = $r1", '1', 'a recovery message is handled in recovery');
sleep(2);
is(handled_count(@deferred), '0', 'the deferred ones are not handled in recovery');
is(sql(q{SELECT mode || '/' || deferred FROM rmsg.instances WHERE instance = 'conv-1'}), 'recovery/5',
	'rmsg.instances: five deferred');
ok(crash_and_restart(), 'crash with deferred instance messages: crash recovery');
my ($r2) = deliver('conv-1', 'r2', 'recovery');
wait_ok("SELECT count(*) FROM handled WHERE msg_id = $r2", '1',
	'after the restart a recovery message is handled (the worker is back)');
sleep(2);
is(handled_count(@deferred), '0', 'the deferred ones are still not handled');
is(sql(q{SELECT mode || '/' || deferred FROM rmsg.instances WHERE instance = 'conv-1'}), 'recovery/5',
	'still in recovery, five deferred');
is(sql(q{SELECT rmsg.complete_recovery('conv-1')}), '5', 'complete_recovery releases five');
$list = join(',', @deferred);
wait_ok("SELECT count(*) FROM handled WHERE msg_id IN ($list)", '5', 'the released messages are handled');
usleep(1_500_000);
is(handled_once(@deferred, $r1, $r2), '7 ok', 'every instance message exactly once');
is( sql(qq{SELECT string_agg(msg_id || '=' || payload, ' ' ORDER BY seq) FROM handled WHERE msg_id IN ($list, $r1, $r2)}),
	join(' ', "$r1=conv-1/recovery/r1", "$r2=conv-1/recovery/r2", map { "$deferred[$_-1]=conv-1/normal/n$_" } 1 .. 5),
	'the recovery messages, then the deferred ones in msg_id order');
is(sql(q{SELECT mode || '/' || ready || '/' || deferred || '/' || in_flight FROM rmsg.instances WHERE instance = 'conv-1'}),
	'normal/0/0/0', 'conv-1: normal and empty');

#---------------------------------------------------------------------------
# 9. A fast shutdown while a handler sleeps 60 s
#---------------------------------------------------------------------------

sql(q{INSERT INTO flag VALUES ('sleep')});
my $long = put('q', 'sleep:60:shutdown');
wait_sleeping_worker('the handler sleeps (60 s)');
$t0 = time;
$node->stop('fast');
my $stop_secs = time - $t0;
cmp_ok($stop_secs, '<', 15, 'a fast shutdown does not wait for the handler');
note(sprintf('fast shutdown took %.1f s', $stop_secs));

#---------------------------------------------------------------------------
# 10. rmsg.worker_count = 0
#---------------------------------------------------------------------------

set_worker_count(0);
$node->start;
is(sql('SELECT count(*) FROM rmsg.worker'), '0', 'rmsg.worker_count = 0: rmsg.worker has no rows');
is(sql($worker_pids_sql), '', 'no recoverable_msg worker in pg_stat_activity');
sql(q{DELETE FROM flag WHERE name = 'sleep'});
is(handled_count($long), '0', 'the message interrupted by the shutdown: its work rolled back');
my $idle = put('q', 'no workers');
sleep(3);
is(handled_count($long, $idle), '0', 'no message is handled without workers');
is(queue_counts('q'), '2/0/0/0', 'both wait ready in the subscribed queue');

set_worker_count(1);
$node->restart;
wait_ok("SELECT count(*) FROM handled WHERE msg_id IN ($long, $idle)", '2', 'a worker again: both are handled');
wait_ok(q{SELECT ready + in_flight + delayed FROM rmsg.queues WHERE queue = 'q'}, '0', 'and acked');
is(handled_once($long, $idle), '2 ok', 'once each');

$node->stop;
done_testing();
