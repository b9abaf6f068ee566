use strict;
use warnings FATAL => 'all';

# The background workers and the handlers they call (rmsg.subscribe,
# rmsg.set_handler), end to end on a real server with two workers.  Every
# handler writes what it saw to the table "handled", in the worker's
# transaction, so a row there is a committed, acked handling; failures are
# counted with sequences, whose nextval a rollback does not undo.
#  1. a queue handler (payload, headers, msg_id) handles each message once,
#     as the subscribing role, in a worker; the queue ends empty and the
#     worker counts the messages;
#  2. handlers taking one and two arguments get the payload (and headers);
#  3. batch 50: 200 messages put in one transaction are handled once each,
#     at most 50 per worker transaction;
#  4. failures: a message that keeps failing is tried max_deliveries times,
#     with growing gaps (exponential backoff, read from the LOG lines), then
#     goes to the dead-letter queue, or is kept dead without one; between
#     tries it is 'delayed'; rmsg.handlers and rmsg.worker record it; what
#     the failing handler wrote is undone;
#  5. a handler runs as the role that subscribed it; subscribing without
#     EXECUTE on the handler fails with 42501;
#  6. instances: in recovery only recovery messages are handled, the
#     deferred ones after complete_recovery in arrival order, then the later
#     ones; the longest prefix picks the handler; an instance no prefix
#     matches is left alone;
#  7. two workers: 20 instances x 20 messages, each handled once, per
#     instance in order and never two at once; a 500-message queue handled
#     once each; 4 message groups x 25 handled once, per group in order and
#     never two at once; both workers took part in each; flow control:
#     concurrency 1 never two calls at once, rate 10 per second held;
#  8. an instance message that fails twice holds its line: the next message
#     is handled only after it succeeds;
#  9. maintenance, with nobody calling get: an exhausted message whose lease
#     ran out is dead-lettered, an unreferenced payload row collected, an
#     expired put key removed;
# 10. unsubscribe and remove_handler stop the handling, messages stay;
#     also for a worker in the middle of a pass, for every message
#     committed after the change;
# 11. with rmsg.worker_naptime = 1h, commits wake the workers: a put is
#     handled within seconds, one in an open transaction only once it
#     commits, a rolled-back one never; a paused queue's message only once
#     the queue is resumed; back to 1s, maintenance resumes.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use Time::Local qw(timegm);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

my $node = new_node(
	'worker_handlers',
	workers => 2,
	conf    => q{
rmsg.worker_naptime = '1s'
rmsg.retry_delay = '500ms'
rmsg.max_retry_delay = '10s'
autovacuum = off
});

#---------------------------------------------------------------------------
# Helpers
#---------------------------------------------------------------------------

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub poll
{
	my ($query, $expected, $what) = @_;
	my $ok = $node->poll_query_until('postgres', $query, $expected // 't');
	ok($ok, $what);
	return $ok;
}

# Polls $query until it returns 't' or $timeout seconds pass; returns the
# seconds it took, or undef on timeout.
sub wait_true
{
	my ($query, $timeout) = @_;
	my $start = time;
	while (1)
	{
		return time - $start if sql($query) eq 't';
		return undef if time - $start > $timeout;
		usleep(50_000);
	}
}

# sum of a counter of rmsg.worker
sub worker_sum
{
	my ($col) = @_;
	return sql("SELECT coalesce(sum($col), 0) FROM rmsg.worker");
}

sub worker_sums
{
	return { map { $_ => worker_sum($_) } qw(processed errors retried dead_lettered) };
}

# queue counts as "ready/in_flight/delayed/dead"
sub queue_counts
{
	my ($q) = @_;
	return sql("SELECT ready || '/' || in_flight || '/' || delayed || '/' || dead
	              FROM rmsg.queues WHERE queue = '$q'");
}

sub instance_counts
{
	my ($i) = @_;
	return sql("SELECT mode || '/' || ready || '/' || deferred || '/' || in_flight
	              FROM rmsg.instances WHERE instance = '$i'");
}

# payloads handled by a handler (tag), in the order handled
sub handled_payloads
{
	my ($tag) = @_;
	return sql("SELECT string_agg(payload, ',' ORDER BY seq) FROM handled WHERE tag = '$tag'");
}

# After a handler change committed: waits until every worker has ended a
# pass since then, so that what follows starts from idle workers.  (A
# message committed after the change meets the new handlers either way:
# part 10 checks that for workers in the middle of a pass.)
sub handlers_settled
{
	my ($what) = @_;
	my $t = sql('SELECT clock_timestamp()');
	return poll(qq{SELECT bool_and(state = 'idle' AND last_activity > '$t') FROM rmsg.worker},
		't', "$what: every worker ended a pass since");
}

# the (seconds since the epoch of the) LOG lines after $offset matching $re
sub log_times
{
	my ($re, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset);
	my @t;
	for my $line (split /\n/, $log)
	{
		next unless $line =~ $re;
		$line =~ /^(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)(\.\d+)?/
		  or die "no timestamp in log line: $line";
		push @t, timegm($6, $5, $4, $3, $2 - 1, $1) + ($7 // 0);
	}
	return @t;
}

#---------------------------------------------------------------------------
# Setup: the extension, the record of handled messages, the handlers
#---------------------------------------------------------------------------

sql(q{
CREATE EXTENSION recoverable_msg;

CREATE TABLE handled (
    seq     bigserial PRIMARY KEY,
    tag     text NOT NULL,              -- which handler
    target  text,                       -- the instance, for instance handlers
    payload text,
    headers jsonb,
    msg_id  bigint,
    kind    text,
    usr     text DEFAULT current_user,
    pid     int DEFAULT pg_backend_pid(),
    xid     bigint DEFAULT txid_current(),
    started timestamptz DEFAULT clock_timestamp(),
    ended   timestamptz DEFAULT clock_timestamp());

-- queue handlers, by arity
CREATE FUNCTION h3(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.handled (tag, payload, headers, msg_id)
    VALUES ('h3', convert_from(p, 'UTF8'), h, id);
END $$;
CREATE FUNCTION h2(p bytea, h jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.handled (tag, payload, headers) VALUES ('h2', convert_from(p, 'UTF8'), h);
END $$;
CREATE FUNCTION h1(p bytea) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.handled (tag, payload) VALUES ('h1', convert_from(p, 'UTF8'));
END $$;
CREATE FUNCTION h_bulk(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.handled (tag, payload, msg_id) VALUES ('bulk', convert_from(p, 'UTF8'), id);
END $$;

-- fails for payloads starting with 'bad'; each call of those counted
CREATE SEQUENCE bad_calls;
CREATE FUNCTION h_fail(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s text := convert_from(p, 'UTF8');
BEGIN
    IF s LIKE 'bad%' THEN
        PERFORM nextval('public.bad_calls');
        RAISE EXCEPTION 'bad payload %', s;
    END IF;
    INSERT INTO public.handled (tag, payload, msg_id) VALUES ('fail', s, id);
END $$;

-- writes, then fails
CREATE SEQUENCE undo_calls;
CREATE FUNCTION h_undo(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('public.undo_calls');
    INSERT INTO public.handled (tag, payload, msg_id) VALUES ('undo', convert_from(p, 'UTF8'), id);
    RAISE EXCEPTION 'undone after writing';
END $$;

-- for the role test
CREATE FUNCTION h_app(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.handled (tag, payload, msg_id) VALUES ('app', convert_from(p, 'UTF8'), id);
END $$;
CREATE FUNCTION h_private(p bytea) RETURNS void LANGUAGE sql AS $$ SELECT $$;
REVOKE EXECUTE ON FUNCTION h_private(bytea) FROM PUBLIC;

-- instance handlers
CREATE FUNCTION i_order(inst text, p bytea, k text, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.handled (tag, target, payload, kind, headers, msg_id)
    VALUES ('order', inst, convert_from(p, 'UTF8'), k, h, id);
END $$;
CREATE FUNCTION i_vip(inst text, p bytea, k text, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.handled (tag, target, payload, kind, headers, msg_id)
    VALUES ('vip', inst, convert_from(p, 'UTF8'), k, h, id);
END $$;
CREATE FUNCTION i_par(inst text, p bytea, k text, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    PERFORM pg_sleep(0.005);
    INSERT INTO public.handled (tag, target, payload, msg_id, started, ended)
    VALUES ('par', inst, convert_from(p, 'UTF8'), id, t0, clock_timestamp());
END $$;
CREATE FUNCTION h_q500(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.001);
    INSERT INTO public.handled (tag, msg_id) VALUES ('q500', id);
END $$;
-- two arguments; 'f1' fails on its first two calls
CREATE SEQUENCE flaky_calls;
CREATE FUNCTION i_flaky(inst text, p bytea) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s text := convert_from(p, 'UTF8');
BEGIN
    IF s = 'f1' AND nextval('public.flaky_calls') <= 2 THEN
        RAISE EXCEPTION 'flaky % fails', s;
    END IF;
    INSERT INTO public.handled (tag, target, payload) VALUES ('flaky', inst, s);
END $$;
CREATE FUNCTION h_wake(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.handled (tag, payload, msg_id) VALUES ('wake', convert_from(p, 'UTF8'), id);
END $$;

-- for the handler list a worker keeps through a pass (part 10)
CREATE FUNCTION q_slow(p bytea) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(2);
    INSERT INTO public.handled (tag, payload) VALUES ('slow', convert_from(p, 'UTF8'));
END $$;
CREATE FUNCTION q_stale(p bytea) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.handled (tag, payload) VALUES ('stale-q', convert_from(p, 'UTF8'));
END $$;
CREATE FUNCTION i_stale(inst text, p bytea) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.handled (tag, target, payload) VALUES ('stale-', inst, convert_from(p, 'UTF8'));
END $$;
CREATE FUNCTION i_stale_x(inst text, p bytea) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.handled (tag, target, payload) VALUES ('stale-x-', inst, convert_from(p, 'UTF8'));
END $$;

-- the SQLSTATE a statement fails with, 'ok' if it does not
CREATE FUNCTION sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;
});

my @pids = split /\n/, sql(q{SELECT pid FROM pg_stat_activity
                               WHERE backend_type = 'recoverable_msg worker' ORDER BY pid});
is(scalar(@pids), 2, 'two workers run');
is(sql(q{SELECT string_agg(worker || ':' || (pid IS NOT NULL), ',' ORDER BY worker) FROM rmsg.worker}),
	'0:true,1:true', 'rmsg.worker: one row per worker slot, both running');
my $me = sql('SELECT current_user');

#---------------------------------------------------------------------------
# 1. A queue handler with three arguments
#---------------------------------------------------------------------------

sql(q{SELECT rmsg.create_queue('basic')});
sql(q{SELECT rmsg.subscribe('basic', 'h3(bytea,jsonb,bigint)')});
is( sql(q{SELECT kind || ' ' || target || ' ' || handler || ' ' || batch || ' ' || owner || ' ' || errors
            FROM rmsg.handlers}),
	"queue basic h3(bytea,jsonb,bigint) 1 $me 0",
	'rmsg.handlers shows the subscription');

my $N = 10;
my $ids = sql(qq{
	SELECT string_agg(rmsg.put('basic', ('m' || i)::text,
	                           CASE WHEN i % 2 = 0 THEN jsonb_build_object('i', i) END)::text, ',' ORDER BY i)
	  FROM generate_series(1, $N) i});
my @basic_ids = split /,/, $ids;
is(scalar(@basic_ids), $N, "$N messages put, with headers on every other one");

poll(qq{SELECT count(*) = $N FROM handled WHERE tag = 'h3'}, 't', "all $N messages handled");
is( sql(qq{SELECT count(*) FROM unnest('{$ids}'::bigint[]) id
             WHERE (SELECT count(*) FROM handled WHERE tag = 'h3' AND msg_id = id) = 1}),
	$N, 'each msg_id handled exactly once');
is( sql(qq{SELECT string_agg(payload || '=' || coalesce(headers::text, 'null'), ' ' ORDER BY msg_id)
             FROM handled WHERE tag = 'h3'}),
	join(' ', map { "m$_=" . ($_ % 2 == 0 ? "{\"i\": $_}" : 'null') } 1 .. $N),
	'each handler call got its payload, its headers (NULL without) and its msg_id');
is( sql(qq{SELECT string_agg(h.msg_id::text, ',' ORDER BY h.payload COLLATE "C")
             FROM handled h WHERE tag = 'h3'}),
	join(',', @basic_ids[0, 9, 1 .. 8]), 'the msg_id given is the one put returned');
is(sql(q{SELECT string_agg(DISTINCT usr, ',') FROM handled WHERE tag = 'h3'}),
	$me, 'the handler ran as the role that subscribed');
is( sql(q{SELECT count(*) FROM handled h WHERE tag = 'h3'
             AND h.pid NOT IN (SELECT pid FROM rmsg.worker WHERE pid IS NOT NULL)}),
	'0', 'the handler ran in the worker processes');
is(queue_counts('basic'), '0/0/0/0', 'the queue is empty: every message acked');
poll(qq{SELECT sum(processed) = $N FROM rmsg.worker}, 't', "rmsg.worker: processed sums to $N");
is(worker_sum('errors'), '0', 'rmsg.worker: no errors');

#---------------------------------------------------------------------------
# 2. Handlers with one and two arguments
#---------------------------------------------------------------------------

sql(q{
	SELECT rmsg.create_queue('arity1');
	SELECT rmsg.create_queue('arity2');
	SELECT rmsg.subscribe('arity1', 'h1(bytea)');
	SELECT rmsg.subscribe('arity2', 'h2(bytea,jsonb)');
	SELECT rmsg.put('arity1', 'one'::text, '{"x": 1}');
	SELECT rmsg.put('arity2', 'two-a'::text, '{"y": 2}');
	SELECT rmsg.put('arity2', 'two-b'::text);
});
poll(q{SELECT count(*) = 3 FROM handled WHERE tag IN ('h1', 'h2')}, 't', 'the 1- and 2-argument handlers ran');
is( sql(q{SELECT string_agg(tag || ':' || payload || ':' || coalesce(headers::text, 'null'), ' '
                            ORDER BY payload) FROM handled WHERE tag IN ('h1', 'h2')}),
	'h1:one:null h2:two-a:{"y": 2} h2:two-b:null',
	'one argument: the payload; two: payload and headers');
is(queue_counts('arity1') . ' ' . queue_counts('arity2'), '0/0/0/0 0/0/0/0', 'both queues empty');

#---------------------------------------------------------------------------
# 3. batch 50
#---------------------------------------------------------------------------

sql(q{SELECT rmsg.create_queue('bulk')});
sql(q{SELECT rmsg.subscribe('bulk', 'h_bulk(bytea,jsonb,bigint)', 50)});
is(sql(q{SELECT batch FROM rmsg.handlers WHERE target = 'bulk'}), '50', 'subscribed with batch 50');
sql(q{SELECT count(*) FROM rmsg.put_batch('bulk',
        ARRAY(SELECT convert_to('b' || i, 'UTF8') FROM generate_series(1, 200) i))});
poll(q{SELECT count(*) = 200 FROM handled WHERE tag = 'bulk'}, 't', '200 messages put in one transaction handled');
is( sql(q{SELECT count(DISTINCT msg_id) || '/' || count(DISTINCT payload) FROM handled WHERE tag = 'bulk'}),
	'200/200', 'each of them once');
is(sql(q{SELECT max(n) <= 50 AND count(*) BETWEEN 4 AND 10
           FROM (SELECT xid, count(*) n FROM handled WHERE tag = 'bulk' GROUP BY xid) t}),
	't', 'handled in batches: at most 50 per worker transaction, 4 to 10 transactions');
is(queue_counts('bulk'), '0/0/0/0', 'the batched queue is empty');

#---------------------------------------------------------------------------
# 4. Failing handlers: backoff, dead letters, the record of errors
#---------------------------------------------------------------------------

my $before = worker_sums();
my $log_offset = -s $node->logfile;
sql(q{
	SELECT rmsg.create_queue('jobs_dlq');
	SELECT rmsg.create_queue('jobs', 3, 'jobs_dlq');
	SELECT rmsg.subscribe('jobs', 'h_fail(bytea,jsonb,bigint)');
});
my $bad_id = sql(q{
	SELECT rmsg.put('jobs', 'good1'::text);
	SELECT rmsg.put('jobs', 'bad1'::text);
	SELECT rmsg.put('jobs', 'good2'::text);
});
$bad_id = (split /\n/, $bad_id)[1];
poll(q{SELECT delayed = 1 AND ready = 0 FROM rmsg.queues WHERE queue = 'jobs'}, 't',
	'between tries the failed message is delayed in rmsg.queues');
poll(q{SELECT ready = 1 FROM rmsg.queues WHERE queue = 'jobs_dlq'}, 't',
	'the failing message ends in the dead-letter queue');
# two workers take good1 and good2 in turn, but may finish them in either order
is( sql(q{SELECT string_agg(payload, ',' ORDER BY payload) FROM handled WHERE tag = 'fail'}),
	'good1,good2', 'the good messages were handled, once each');
is(queue_counts('jobs'), '0/0/0/0', 'nothing left in the queue, nothing dead there');
is(sql(q{SELECT last_value FROM bad_calls}), '3', 'the handler was called 3 times (max_deliveries) for it');
is(sql(q{SELECT convert_from(payload, 'UTF8') FROM rmsg.get('jobs_dlq', 1)}), 'bad1',
	'the dead-letter queue holds the failed payload');
is( sql(q{SELECT errors || ' ' || last_error || ' ' || last_error_msg_id || ' ' || (last_error_at IS NOT NULL)
            FROM rmsg.handlers WHERE target = 'jobs'}),
	"3 bad payload bad1 $bad_id true", 'rmsg.handlers: 3 errors, the last one with its message and msg_id');

my @tries = log_times(qr/handler of queue "jobs" failed on message $bad_id \(delivery \d of 3\): bad payload bad1/,
	$log_offset);
my @deliveries = map { /\(delivery (\d) of 3\)/ ? $1 : () }
  grep { /handler of queue "jobs" failed on message $bad_id/ } split /\n/, slurp_file($node->logfile, $log_offset);
is(join(',', @deliveries), '1,2,3', 'LOG lines: deliveries 1, 2 and 3 of 3 failed');
if (@tries == 3)
{
	my ($gap1, $gap2) = ($tries[1] - $tries[0], $tries[2] - $tries[1]);
	note(sprintf('retry gaps: %.3f s, %.3f s', $gap1, $gap2));
	cmp_ok($gap1, '>=', 0.45, 'the second try came after rmsg.retry_delay (500ms)');
	cmp_ok($gap2, '>=', 0.95, 'the third try came after twice rmsg.retry_delay');
	cmp_ok($gap2, '>', 1.5 * $gap1, 'the gaps grow: exponential backoff');
	cmp_ok($gap2, '<', 3, 'the retry was not left to wait much beyond its due time');
}
else
{
	fail('three LOG lines for the failing message, got ' . scalar(@tries));
}

# without a dead-letter queue: kept dead
sql(q{
	SELECT rmsg.create_queue('nodlq', 2);
	SELECT rmsg.subscribe('nodlq', 'h_fail(bytea,jsonb,bigint)');
	SELECT rmsg.put('nodlq', 'bad2'::text);
});
poll(q{SELECT dead = 1 FROM rmsg.queues WHERE queue = 'nodlq'}, 't',
	'without a dead-letter queue the failing message ends dead');
is(queue_counts('nodlq'), '0/0/0/1', 'nothing else left in that queue');
is(sql(q{SELECT last_value FROM bad_calls}), '5', 'tried twice (max_deliveries 2)');

# what a failing handler wrote is undone
sql(q{
	SELECT rmsg.create_queue('undoq', 1);
	SELECT rmsg.subscribe('undoq', 'h_undo(bytea,jsonb,bigint)');
	SELECT rmsg.put('undoq', 'u1'::text);
});
poll(q{SELECT dead = 1 FROM rmsg.queues WHERE queue = 'undoq'}, 't', 'the writing-then-failing message ends dead');
is(sql(q{SELECT last_value || ' ' || is_called FROM undo_calls}), '1 true', 'its handler was called once');
is(sql(q{SELECT count(*) FROM handled WHERE tag = 'undo'}), '0', 'the row it inserted before failing was rolled back');
is(sql(q{SELECT errors || ' ' || last_error FROM rmsg.handlers WHERE target = 'undoq'}),
	'1 undone after writing', 'its error is recorded');

poll(qq{SELECT sum(errors) = $before->{errors} + 6 AND sum(retried) = $before->{retried} + 3
                 AND sum(dead_lettered) = $before->{dead_lettered} + 3 FROM rmsg.worker},
	't', 'rmsg.worker: 6 failed calls, 3 retries, 3 dead letters');
is(worker_sum('processed') - $before->{processed}, 2, 'rmsg.worker: 2 more processed (the good ones)');
like(sql(q{SELECT string_agg(last_error, ' | ') FROM rmsg.worker WHERE last_error IS NOT NULL}),
	qr/bad payload|undone after writing/, 'rmsg.worker keeps the last handler error');

#---------------------------------------------------------------------------
# 5. The role that subscribed
#---------------------------------------------------------------------------

sql(q{
	CREATE ROLE app NOLOGIN;
	GRANT USAGE ON SCHEMA rmsg TO app;
	GRANT INSERT ON handled TO app;
	GRANT USAGE ON SEQUENCE handled_seq_seq TO app;
	SELECT rmsg.create_queue('appq');
	SELECT rmsg.create_queue('appq2');
	SELECT rmsg.grant_queue('appq', 'app', 'manage, get');
	SELECT rmsg.grant_queue('appq2', 'app', 'manage, get');
});
is( sql(q{SET ROLE app; SELECT sqlstate_of($$SELECT rmsg.subscribe('appq2', 'h_private(bytea)')$$)}),
	'42501', 'subscribing without EXECUTE on the handler: 42501');
sql(q{SET ROLE app; SELECT rmsg.subscribe('appq', 'h_app(bytea,jsonb,bigint)')});
is(sql(q{SELECT owner FROM rmsg.handlers WHERE target = 'appq'}), 'app', 'rmsg.handlers: owned by app');
is(sql(q{SELECT count(*) FROM rmsg.handlers WHERE target = 'appq2'}), '0', 'the refused subscription is not there');
sql(q{SELECT rmsg.put('appq', 'as-app'::text)});
poll(q{SELECT count(*) = 1 FROM handled WHERE tag = 'app'}, 't', "app's handler ran");
is(sql(q{SELECT usr FROM handled WHERE tag = 'app'}), 'app', 'current_user inside the handler is app');

#---------------------------------------------------------------------------
# 6. Instances: recovery, prefixes
#---------------------------------------------------------------------------

sql(q{
	SELECT rmsg.create_instance('order-1');
	SELECT rmsg.create_instance('order-vip-1');
	SELECT rmsg.create_instance('other-1');
	SELECT rmsg.begin_recovery('order-1');
	SELECT rmsg.set_handler('order-', 'i_order(text,bytea,text,jsonb,bigint)');
	SELECT rmsg.set_handler('order-vip-', 'i_vip(text,bytea,text,jsonb,bigint)');
});
handlers_settled('instance handlers set');
is( sql(q{SELECT string_agg(target || '=' || handler, ' ' ORDER BY target) FROM rmsg.handlers WHERE kind = 'instance'}),
	'order-=i_order(text,bytea,text,jsonb,bigint) order-vip-=i_vip(text,bytea,text,jsonb,bigint)',
	'rmsg.handlers shows both prefixes');

my %mid;
sub deliver
{
	my ($inst, $name, $kind, $headers) = @_;
	$kind //= 'normal';
	my $h = defined $headers ? "'$headers'" : 'NULL';
	my ($id, $disp) = split /\|/,
	  sql("SELECT msg_id, disposition FROM rmsg.deliver('$inst', convert_to('$name', 'UTF8'), '$kind', $h)");
	$mid{$name} = $id;
	return $disp;
}

is( join(',',
		deliver('order-1', 'n1'), deliver('order-1', 'r1', 'recovery', '{"r": 1}'),
		deliver('order-1', 'n2'), deliver('order-1', 'r2', 'recovery')),
	'deferred,ready,deferred,ready', 'order-1 in recovery: normal deferred, recovery ready');
is(deliver('order-vip-1', 'v1') . ',' . deliver('other-1', 'o1'), 'ready,ready',
	'order-vip-1 and other-1: ready');
poll(q{SELECT count(*) = 3 FROM handled WHERE tag IN ('order', 'vip')}, 't',
	'the recovery messages and the vip message are handled');
is( sql(q{SELECT string_agg(tag || ':' || target || ':' || payload || ':' || kind || ':' || coalesce(headers::text, '-'), ' '
                            ORDER BY seq) FROM handled WHERE tag = 'order'}),
	'order:order-1:r1:recovery:{"r": 1} order:order-1:r2:recovery:-',
	'in recovery only the recovery messages were handled, in order, with kind and headers');
is( sql(q{SELECT string_agg(payload || '=' || msg_id, ' ' ORDER BY seq) FROM handled WHERE tag = 'order'}),
	"r1=$mid{r1} r2=$mid{r2}", 'with their msg_ids');
is(sql(q{SELECT target || ':' || payload || ':' || kind FROM handled WHERE tag = 'vip'}),
	'order-vip-1:v1:normal', "order-vip-1 went to the longest prefix's handler");
is(instance_counts('order-1'), 'recovery/0/2/0', 'order-1: the two normal messages wait, deferred');
is(instance_counts('order-vip-1'), 'normal/0/0/0', 'order-vip-1 is empty');

is(sql(q{SELECT rmsg.complete_recovery('order-1')}), '2', 'complete_recovery releases two');
deliver('order-1', 'n3');
poll(q{SELECT count(*) = 5 FROM handled WHERE tag = 'order'}, 't', 'the released messages and the later one handled');
is(handled_payloads('order'), 'r1,r2,n1,n2,n3',
	'after complete_recovery: the deferred messages in arrival order, then the later one');
is( sql(q{SELECT bool_and(msg_id = expected) FROM handled
            JOIN (VALUES } . join(',', map { "('$_', $mid{$_})" } qw(n1 n2 n3)) . q{) e(name, expected)
              ON payload = name WHERE tag = 'order'}),
	't', 'with their msg_ids');
is(instance_counts('order-1'), 'normal/0/0/0', 'order-1 is empty');
is(instance_counts('other-1'), 'normal/1/0/0', 'other-1, matching no prefix, still has its message ready');
is(sql(q{SELECT count(*) FROM handled WHERE target = 'other-1'}), '0', 'and it was never handled');

#---------------------------------------------------------------------------
# 7. Two workers, no overlap
#---------------------------------------------------------------------------

sql(q{
	SELECT rmsg.create_instance('par-' || i) FROM generate_series(1, 20) i;
	SELECT count(*) FROM generate_series(1, 20) j, generate_series(1, 20) i,
	       LATERAL rmsg.deliver('par-' || i, convert_to(i || ':' || j, 'UTF8'));
});
is(sql(q{SELECT sum(ready) FROM rmsg.instances WHERE instance LIKE 'par-%'}), '400', '20 x 20 messages ready');
sql(q{SELECT rmsg.set_handler('par-', 'i_par(text,bytea,text,jsonb,bigint)')});
poll(q{SELECT count(*) = 400 FROM handled WHERE tag = 'par'}, 't', 'all 400 instance messages handled');
is(sql(q{SELECT count(DISTINCT msg_id) FROM handled WHERE tag = 'par'}), '400', 'each once');
is( sql(q{SELECT count(*) FROM handled WHERE tag = 'par' AND target <> 'par-' || split_part(payload, ':', 1)}),
	'0', 'each by its own instance');
is( sql(q{SELECT count(*) FROM (
            SELECT msg_id, lag(msg_id) OVER w AS prev_id,
                   split_part(payload, ':', 2)::int AS j, lag(split_part(payload, ':', 2)::int) OVER w AS prev_j
              FROM handled WHERE tag = 'par' WINDOW w AS (PARTITION BY target ORDER BY started)) t
           WHERE prev_id IS NOT NULL AND (msg_id < prev_id OR j <> prev_j + 1)}),
	'0', 'per instance, in msg_id (delivery) order');
is( sql(q{SELECT count(*) FROM (
            SELECT started, lag(ended) OVER (PARTITION BY target ORDER BY started) AS prev_end
              FROM handled WHERE tag = 'par') t
           WHERE started < prev_end}),
	'0', 'the handler calls of one instance never overlap');
is(sql(q{SELECT count(DISTINCT pid) FROM handled WHERE tag = 'par'}), '2', 'both workers handled instance messages');
is( sql(q{SELECT count(*) FROM handled a JOIN handled b ON a.pid <> b.pid AND a.started < b.ended AND b.started < a.ended
           WHERE a.tag = 'par' AND b.tag = 'par'}) > 0 ? 'concurrent' : 'serial',
	'concurrent', 'the two workers handled (different instances) at the same time');

sql(q{SELECT rmsg.create_queue('q500')});
sql(q{SELECT rmsg.subscribe('q500', 'h_q500(bytea,jsonb,bigint)')});
my $q500_ids = sql(q{SELECT string_agg(id::text, ',') FROM rmsg.put_batch('q500',
        ARRAY(SELECT convert_to('q' || i, 'UTF8') FROM generate_series(1, 500) i)) id});
poll(q{SELECT count(*) >= 500 FROM handled WHERE tag = 'q500'}, 't', '500 queue messages handled');
is( sql(qq{SELECT count(*) || '/' || count(DISTINCT msg_id) || '/' ||
                  count(*) FILTER (WHERE msg_id = ANY ('{$q500_ids}'::bigint[]))
             FROM handled WHERE tag = 'q500'}),
	'500/500/500', 'each of the 500 exactly once');
is(sql(q{SELECT count(DISTINCT pid) FROM handled WHERE tag = 'q500'}), '2', 'both workers handled queue messages');
is(queue_counts('q500'), '0/0/0/0', 'that queue is empty');

# Message groups with two workers: 4 groups x 25 messages, put interleaved.
# Each message once; per group in msg_id order and never two at once (the
# handler takes 5 ms, so overlaps would show); both workers took part.
sql(q{
	CREATE FUNCTION h_grp(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	    INSERT INTO public.handled (tag, target, payload, msg_id, started)
	    VALUES ('grp', split_part(convert_from(p, 'UTF8'), ':', 1), convert_from(p, 'UTF8'), id,
	            clock_timestamp());
	    PERFORM pg_sleep(0.005);
	    UPDATE public.handled SET ended = clock_timestamp() WHERE tag = 'grp' AND msg_id = id;
	END $$;
	SELECT rmsg.create_queue('grouped');
});
sql(q{SELECT rmsg.put('grouped', ('g' || g || ':' || i)::text, group_id => 'g' || g)
        FROM generate_series(1, 25) i, generate_series(1, 4) g ORDER BY i, g});
sql(q{SELECT rmsg.subscribe('grouped', 'h_grp(bytea,jsonb,bigint)')});
poll(q{SELECT count(*) = 100 FROM handled WHERE tag = 'grp'}, 't', '100 grouped messages handled');
is(sql(q{SELECT count(DISTINCT msg_id) FROM handled WHERE tag = 'grp'}), '100', 'each once');
is( sql(q{SELECT count(*) FROM (
            SELECT msg_id, lag(msg_id) OVER (PARTITION BY target ORDER BY started) AS prev_id
              FROM handled WHERE tag = 'grp') t
           WHERE msg_id < prev_id}),
	'0', 'per group, in msg_id order');
is( sql(q{SELECT count(*) FROM (
            SELECT started, lag(ended) OVER (PARTITION BY target ORDER BY started) AS prev_end
              FROM handled WHERE tag = 'grp') t
           WHERE started < prev_end}),
	'0', 'the handler calls of one group never overlap');
is(sql(q{SELECT count(DISTINCT pid) FROM handled WHERE tag = 'grp'}), '2', 'both workers handled grouped messages');
is(queue_counts('grouped'), '0/0/0/0', 'the grouped queue is empty');

# Flow control across the two workers.  concurrency 1: a handler of 30 ms
# on 20 messages is never in two calls at once (without it both workers
# take turns at once, as above).  rate 10 per second: 25 messages, of which
# the first 10 may go at once (a second's worth), take at least 1.5 s, and
# no second sees more than 20 calls.
sql(q{
	CREATE FUNCTION h_flow(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
	    INSERT INTO public.handled (tag, target, payload, msg_id, started)
	    VALUES ('flow', split_part(convert_from(p, 'UTF8'), ':', 1), convert_from(p, 'UTF8'), id,
	            clock_timestamp());
	    IF convert_from(p, 'UTF8') LIKE 'one:%' THEN
	        PERFORM pg_sleep(0.03);
	    END IF;
	    UPDATE public.handled SET ended = clock_timestamp() WHERE tag = 'flow' AND msg_id = id;
	END $$;
	SELECT rmsg.create_queue('one_at_a_time');
	SELECT rmsg.create_queue('ten_per_second');
	SELECT rmsg.subscribe('one_at_a_time', 'h_flow(bytea,jsonb,bigint)', concurrency => 1);
	SELECT rmsg.subscribe('ten_per_second', 'h_flow(bytea,jsonb,bigint)', batch => 5, rate => 10);
});
sql(q{SELECT rmsg.put('one_at_a_time', ('one:' || i)::text) FROM generate_series(1, 20) i});
sql(q{SELECT rmsg.put('ten_per_second', ('ten:' || i)::text) FROM generate_series(1, 25) i});
poll(q{SELECT count(*) = 45 FROM handled WHERE tag = 'flow'}, 't', '45 messages under flow control handled');
is( sql(q{SELECT count(*) FROM handled a JOIN handled b ON a.seq < b.seq
           WHERE a.tag = 'flow' AND b.tag = 'flow' AND a.target = 'one' AND b.target = 'one'
             AND a.started < b.ended AND b.started < a.ended}),
	'0', 'concurrency 1: no two calls of the queue at once, across two workers');
cmp_ok( sql(q{SELECT extract(epoch FROM max(started) - min(started)) FROM handled
               WHERE tag = 'flow' AND target = 'ten'}),
	'>=', 1.4, 'rate 10: 25 messages (10 at once, then 10 a second) take at least 1.4 s');
is( sql(q{SELECT max(n) FROM (
            SELECT (SELECT count(*) FROM handled b WHERE b.tag = 'flow' AND b.target = 'ten'
                      AND b.started >= a.started AND b.started < a.started + interval '1 second') AS n
              FROM handled a WHERE a.tag = 'flow' AND a.target = 'ten') t}) <= 20 ? 'within' : 'over',
	'within', 'rate 10: no second has more than 20 calls (the burst and one second of rate)');
# Catalog changes while the limited queues are handled: each one makes the
# workers' cached catalog look-ups stale, and a turn begins and ends outside
# any transaction, where they cannot be made again (a worker that tried
# died of a segfault; the test's last check would see it).
sql(q{SELECT rmsg.put('one_at_a_time', ('one:c' || i)::text) FROM generate_series(1, 20) i});
for my $i (1 .. 20)
{
	sql(qq{CREATE TABLE churn_$i (); DROP TABLE churn_$i;
	       SELECT rmsg.put('ten_per_second', 'ten:c$i'::text)});
}
poll(q{SELECT count(*) = 85 FROM handled WHERE tag = 'flow'}, 't',
	'the limited queues are handled through catalog changes');
is(sql(q{SELECT count(*) FROM rmsg.worker WHERE pid IS NOT NULL}), '2', 'both workers still run');

is(sql(q{SELECT target || ' ' || coalesce(concurrency::text, '-') || '/' || coalesce(rate::text, '-')
            FROM rmsg.handlers WHERE target IN ('one_at_a_time', 'ten_per_second') ORDER BY 1}),
	"one_at_a_time 1/-\nten_per_second -/10", 'rmsg.handlers shows the limits');

#---------------------------------------------------------------------------
# 8. A failing instance message holds its line
#---------------------------------------------------------------------------

$log_offset = -s $node->logfile;
sql(q{SELECT rmsg.create_instance('flaky-1')});
deliver('flaky-1', 'f1');
deliver('flaky-1', 'f2');
deliver('flaky-1', 'f3');
sql(q{SELECT rmsg.set_handler('flaky-', 'i_flaky(text,bytea)')});
poll(q{SELECT count(*) = 3 FROM handled WHERE tag = 'flaky'}, 't', 'the flaky instance is drained');
is(handled_payloads('flaky'), 'f1,f2,f3', 'in order: f2 and f3 waited for f1');
is(sql(q{SELECT last_value FROM flaky_calls}), '3', 'f1 took three calls');
is( sql(q{SELECT errors || ' ' || last_error || ' ' || last_error_msg_id FROM rmsg.handlers WHERE target = 'flaky-'}),
	"2 flaky f1 fails $mid{f1}", 'rmsg.handlers: two errors on f1');
my @flaky_log = grep { /handler of instance "flaky-1" failed on message $mid{f1}/ }
  split /\n/, slurp_file($node->logfile, $log_offset);
is(join(',', map { /\(delivery (\d+)\)/ ? $1 : '?' } @flaky_log), '1,2', 'LOG lines: deliveries 1 and 2 failed');
is( sql(q{SELECT min(started) FILTER (WHERE payload = 'f2') > max(ended) FILTER (WHERE payload = 'f1')
            FROM handled WHERE tag = 'flaky'}),
	't', 'f2 was handled after f1 had been');
is(instance_counts('flaky-1'), 'normal/0/0/0', 'the flaky instance is empty');

#---------------------------------------------------------------------------
# 9. Maintenance: sweeping exhausted messages, collecting payloads
#---------------------------------------------------------------------------

$before = worker_sums();
sql(q{SELECT rmsg.create_queue('sweep', 1)});
sql(q{SELECT rmsg.put('sweep', 'lost'::text)});
is(sql(q{SELECT convert_from(payload, 'UTF8') FROM rmsg.get('sweep', 1, '1 second')}), 'lost',
	'a message of an unsubscribed queue (max_deliveries 1) got, never to be acked');
poll(q{SELECT dead = 1 AND ready = 0 AND in_flight = 0 FROM rmsg.queues WHERE queue = 'sweep'}, 't',
	'once its lease ran out the maintenance dead-lettered it, nobody calling get');
poll(qq{SELECT sum(dead_lettered) >= $before->{dead_lettered} + 1 FROM rmsg.worker}, 't',
	'rmsg.worker counts the sweep among the dead letters');
is(sql(q{SELECT maintained_at IS NOT NULL FROM rmsg.worker WHERE worker = 0}), 't',
	'rmsg.worker: worker 0 has maintained_at');

# A pass reads at most 50,000 messages (SWEEP_SCAN), from where the last one
# stopped: an exhausted message behind 60,000 others is found by a later
# pass.  (It fails if every pass starts from the front.)
sql(q{SELECT rmsg.create_queue('sweep_deep', 1)});
sql(q{SELECT count(*) FROM rmsg.put_batch('sweep_deep', array_fill('fresh'::bytea, ARRAY[60000]))});
sql(q{SELECT rmsg.put('sweep_deep', 'deep'::text)});
# as if a get had leased it once (gets take the front of the queue)
sql(q{INSERT INTO rmsg.lease (msg_id, deliveries, lease_until)
       SELECT max(msg_id), 1, now() + interval '1 second' FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
        WHERE q.name = 'sweep_deep'});
poll(q{SELECT dead = 1 AND ready = 60000 FROM rmsg.queues WHERE queue = 'sweep_deep'}, 't',
	'the exhausted message behind 60,000 others was dead-lettered by a later pass');
sql(q{SELECT rmsg.purge_queue('sweep_deep')});

sql(q{SELECT rmsg.create_queue('big')});
sql(q{SELECT rmsg.put('big', repeat('x', 5000))});
is(sql(q{SELECT payload_rows FROM rmsg.log_stats}), '1', 'a 5000-byte payload is kept in rmsg.payload');
is(sql(q{SELECT rmsg.ack(msg_id) FROM rmsg.get('big', 1)}), 't', 'its message got and acked');
poll(q{SELECT payload_rows = 0 FROM rmsg.log_stats}, 't',
	'the maintenance collected the payload row, nobody calling collect_payloads');
poll(q{SELECT sum(payloads_collected) > 0 FROM rmsg.worker}, 't', 'rmsg.worker: payloads_collected > 0');

# The dedup_ids of idempotent puts are forgotten once their window passes;
# those still within a longer window stay.
sql(q{SELECT rmsg.create_queue('keys_short', dedup_window => '1 second');
      SELECT rmsg.create_queue('keys_long');
      SELECT rmsg.put('keys_short', 'a'::text, dedup_id => 'k');
      SELECT rmsg.put('keys_long', 'b'::text, dedup_id => 'k');});
poll(q{SELECT string_agg(q.name, ',') FROM rmsg.put_key k JOIN rmsg.queue q USING (queue_id)},
	'keys_long', 'the maintenance removed the expired put key and kept the live one');

#---------------------------------------------------------------------------
# 10. unsubscribe, remove_handler
#---------------------------------------------------------------------------

sql(q{SELECT rmsg.unsubscribe('basic')});
is(sql(q{SELECT count(*) FROM rmsg.handlers WHERE target = 'basic'}), '0', 'unsubscribed: gone from rmsg.handlers');
sql(q{SELECT rmsg.remove_handler('order-vip-')});
handlers_settled('unsubscribed, a handler removed');
# one commit: messages of an unsubscribed queue and a handler-less instance,
# and one of a subscribed queue whose handling shows the workers went past them
sql(q{
	BEGIN;
	SELECT rmsg.put('basic', 'after-unsubscribe'::text);
	SELECT rmsg.put('arity1', 'marker'::text);
	SELECT rmsg.deliver('order-vip-1', convert_to('v2', 'UTF8'));
	SELECT rmsg.deliver('other-1', convert_to('o2', 'UTF8'));
	COMMIT;
});
poll(q{SELECT count(*) = 1 FROM handled WHERE tag = 'h1' AND payload = 'marker'}, 't',
	'the still subscribed queue is handled');
poll(q{SELECT count(*) = 1 FROM handled WHERE payload = 'v2'}, 't', 'v2 is handled');
is(sql(q{SELECT tag FROM handled WHERE payload = 'v2'}), 'order',
	"after remove_handler('order-vip-') order-vip-1 goes to the 'order-' handler");
sleep(2);    # two naptimes: a worker would have handled them by now
is(queue_counts('basic'), '1/0/0/0', 'the unsubscribed queue keeps its message ready');
is(sql(q{SELECT count(*) FROM handled WHERE payload = 'after-unsubscribe'}), '0', 'it was not handled');

sql(q{SELECT rmsg.remove_handler('order-')});
handlers_settled('the last order handler removed');
deliver('order-1', 'n4');
sql(q{SELECT rmsg.put('arity1', 'marker2'::text)});
poll(q{SELECT count(*) = 1 FROM handled WHERE tag = 'h1' AND payload = 'marker2'}, 't', 'the workers are running');
sleep(2);
is(instance_counts('order-1'), 'normal/1/0/0', "after remove_handler('order-') order-1's message stays ready");
is(instance_counts('order-vip-1'), 'normal/0/0/0', 'order-vip-1 is empty');
is(instance_counts('other-1'), 'normal/2/0/0', 'other-1 keeps its two messages');
is(sql(q{SELECT count(*) FROM handled WHERE payload IN ('n4', 'o1', 'o2', 'after-unsubscribe')}), '0',
	'none of them was handled');
is(sql(q{SELECT sqlstate_of($$SELECT rmsg.unsubscribe('basic')$$)}), '42704', 'unsubscribe again: 42704');
is(sql(q{SELECT sqlstate_of($$SELECT rmsg.remove_handler('order-')$$)}), '42704', 'remove_handler again: 42704');

# A handler change must hold for every message committed after it, also
# when a worker is in the middle of a pass: here both workers sit in a slow
# queue handler while b_stale is unsubscribed and the 'stale-x-' handler
# removed, and a message is put to each.  Once the slow calls return, the
# workers must notice the change before they take another message (and a
# turn that took one after it rolls back), so b_stale's message stays
# and stale-x-1's goes to the 'stale-' handler.
sql(q{
	SELECT rmsg.create_queue('a_slow');
	SELECT rmsg.create_queue('b_stale');
	SELECT rmsg.subscribe('a_slow', 'q_slow(bytea)');
	SELECT rmsg.subscribe('b_stale', 'q_stale(bytea)');
	SELECT rmsg.create_instance('stale-x-1');
	SELECT rmsg.set_handler('stale-', 'i_stale(text,bytea)');
	SELECT rmsg.set_handler('stale-x-', 'i_stale_x(text,bytea)');
});
handlers_settled('stale test handlers set');
sql(q{SELECT rmsg.put_batch('a_slow', ARRAY['s1', 's2']::bytea[])});
poll(q{SELECT count(*) = 2 FROM pg_stat_activity
        WHERE backend_type = 'recoverable_msg worker' AND wait_event = 'PgSleep'}, 't',
	'both workers are in the slow handler');
sql(q{SELECT rmsg.unsubscribe('b_stale')});
sql(q{SELECT rmsg.remove_handler('stale-x-')});
sql(q{SELECT rmsg.put('b_stale', 'late-b'::text)});
deliver('stale-x-1', 'late-x');
poll(q{SELECT count(*) = 2 FROM handled WHERE tag = 'slow'}, 't', 'the slow calls returned');
poll(q{SELECT count(*) = 1 FROM handled WHERE payload = 'late-x'}, 't', 'late-x is handled');
handlers_settled('the slow pass');
is(sql(q{SELECT tag FROM handled WHERE payload = 'late-x'}), 'stale-',
	'a message delivered after remove_handler committed is not handled by the removed handler');
is(queue_counts('b_stale') . ' ' . sql(q{SELECT count(*) FROM handled WHERE payload = 'late-b'}), '1/0/0/0 0',
	'a message put after unsubscribe committed is not handled');

#---------------------------------------------------------------------------
# 11. Commits wake the workers (naptime 1h)
#---------------------------------------------------------------------------

sql(q{
	SELECT rmsg.create_queue('wake');
	SELECT rmsg.subscribe('wake', 'h_wake(bytea,jsonb,bigint)');
	ALTER SYSTEM SET rmsg.worker_naptime = '1h';
	SELECT pg_reload_conf();
});
poll(q{SHOW rmsg.worker_naptime}, '1h', 'rmsg.worker_naptime is 1h');
# worker 0's maintenance was due within the old naptime; let it pass
sleep(2);
my $maintained = sql(q{SELECT maintained_at FROM rmsg.worker WHERE worker = 0});

sql(q{SELECT rmsg.put('wake', 'w1'::text)});
my $took = wait_true(q{SELECT count(*) = 1 FROM handled WHERE payload = 'w1'}, 10);
ok(defined $took && $took < 5, 'a put is handled within 5 s (' . ($took // 'never') . ' s)');

my $s = session_open($node, 'open_put');
session_query($s, 'BEGIN;', 'open transaction: begin');
session_query($s, q{SELECT rmsg.put('wake', 'w2'::text);}, 'open transaction: put');
sleep(1);
is(sql(q{SELECT count(*) FROM handled WHERE payload = 'w2'}), '0',
	'a put in a transaction still open is not handled');
session_query($s, 'COMMIT;', 'open transaction: commit');
$took = wait_true(q{SELECT count(*) = 1 FROM handled WHERE payload = 'w2'}, 10);
ok(defined $took && $took < 5, 'once committed it is handled within 5 s (' . ($took // 'never') . ' s)');

session_query($s, 'BEGIN;', 'rolled back: begin');
session_query($s, q{SELECT rmsg.put('wake', 'w3'::text);}, 'rolled back: put');
session_query($s, 'ROLLBACK;', 'rolled back: rollback');
sql(q{SELECT rmsg.put('wake', 'w4'::text)});
$took = wait_true(q{SELECT count(*) = 1 FROM handled WHERE payload = 'w4'}, 10);
ok(defined $took && $took < 5, 'a put after the rollback is handled within 5 s (' . ($took // 'never') . ' s)');
is(handled_payloads('wake'), 'w1,w2,w4', 'the rolled-back put was never handled');
is(queue_counts('wake'), '0/0/0/0', 'the wake queue is empty');
is(sql(q{SELECT maintained_at FROM rmsg.worker WHERE worker = 0}), $maintained,
	'no maintenance meanwhile: the workers slept the long naptime and the commits woke them');
session_kill($s);

# A paused queue: the put wakes the workers, which dispatch nothing; the
# resume wakes them again (the naptime is still 1h) and they handle it.
sql(q{SELECT rmsg.pause_queue('wake')});
sql(q{SELECT rmsg.put('wake', 'p1'::text)});
sleep(2);
is(sql(q{SELECT count(*) FROM handled WHERE payload = 'p1'}), '0',
	'a message put to a paused queue is not handled');
is(queue_counts('wake'), '1/0/0/0', 'it waits, ready, in the paused queue');
sql(q{SELECT rmsg.resume_queue('wake')});
$took = wait_true(q{SELECT count(*) = 1 FROM handled WHERE payload = 'p1'}, 10);
ok(defined $took && $took < 5,
	'the resume wakes the workers: handled within 5 s (' . ($took // 'never') . ' s)');

# Back to a short naptime: the maintenance should follow it.
sql(q{ALTER SYSTEM SET rmsg.worker_naptime = '1s'; SELECT pg_reload_conf();});
poll(q{SHOW rmsg.worker_naptime}, '1s', 'rmsg.worker_naptime is 1s again');
my $m_took = wait_true(qq{SELECT maintained_at > '$maintained' FROM rmsg.worker WHERE worker = 0}, 5);
ok(defined $m_took && $m_took < 3,
	'with the naptime lowered to 1s, maintenance runs again within 3 s (' . ($m_took // 'never') . ' s)');

# The extension dropped and made again while a limited queue is handled:
# the workers' handlers then name tables that are gone, and a turn begins
# and ends outside any transaction, where the catalog cannot be read again
# (a worker that tried died of a segfault).
for my $round (1 .. 3)
{
	sql(qq{SELECT rmsg.create_queue('limited_$round');
	       SELECT rmsg.subscribe('limited_$round', 'h_flow(bytea,jsonb,bigint)', concurrency => 1, rate => 5);
	       SELECT rmsg.put('limited_$round', ('ten:r$round:' || i)::text) FROM generate_series(1, 10) i});
	sleep(1);
	sql(q{DROP EXTENSION recoverable_msg CASCADE});
	sql(q{CREATE EXTENSION recoverable_msg});
	sql(q{CREATE TABLE churn (); DROP TABLE churn});
	sleep(1);
}
sql(q{SELECT rmsg.create_queue('after_drop');
      SELECT rmsg.subscribe('after_drop', 'h_flow(bytea,jsonb,bigint)', rate => 100);
      SELECT rmsg.put('after_drop', 'ten:after'::text)});
poll(q{SELECT count(*) = 1 FROM handled WHERE payload = 'ten:after'}, 't',
	'after the extension was dropped and made again, a limited queue is handled');

is(sql(q{SELECT count(*) FROM rmsg.worker WHERE pid IS NOT NULL}), '2', 'both workers still run');
ok(!$node->log_contains(qr/background worker "recoverable_msg worker[^"]*" \(PID \d+\) (exited|was terminated)|terminated by signal/),
	'no worker died during the test');

$node->stop;
done_testing();
