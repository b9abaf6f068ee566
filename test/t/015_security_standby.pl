use strict;
use warnings FATAL => 'all';

# A streaming standby is read-only, and the extension must say so itself:
# every function that writes refuses there with SQLSTATE 25006, at its
# first line, before it touches a table, a shared-memory counter or the
# session's tokens.  An executor error from a statement it runs inside
# would also read 25006, but only after the function had started its work,
# so the message must name the function ("cannot execute rmsg.put during
# recovery"), as RmsgEnter words it.  What only reads must keep working on
# the standby: the STABLE functions, the VOLATILE ones that read shared
# memory behind the views, and every view.  And the background worker,
# configured on the standby as on the primary, must not start there.
#
# The writers are not listed by hand: they are every VOLATILE function of
# schema rmsg in pg_proc, less the readers named below.  A function added
# later without a call written for it here fails the test, so that nobody
# forgets to check that it refuses.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

#---------------------------------------------------------------------------
# A primary with the worker, and a standby made from its backup, which
# therefore has the same settings (worker_count = 1 included).
#---------------------------------------------------------------------------
# %b puts the backend type on each line, so a line logged by the worker
# would say 'recoverable_msg worker'.  A short naptime makes a worker that
# did start on the standby wake, and fail, several times while we watch.
my $primary = new_node(
	'sb_primary',
	allows_streaming => 1,
	workers          => 1,
	conf             => q{
rmsg.worker_naptime = '1s'
log_line_prefix = '%m [%p] %b %q%a '
});

my $ps = sub { return $primary->safe_psql('postgres', $_[0]); };

# The state the standby will hold: a queue with ready messages and one in
# flight (its receipt is needed for the receipted ack, nack and extend),
# one queue whose payload is a row of its own, an empty subscribed queue
# (so the primary's worker stays idle), an instance in recovery with a
# deferred message, an instance handler for a prefix no instance has, a
# caller with a replied call and an unreplied one, a callee that stored a
# reply, and grants on each kind of object.
$ps->(q{
CREATE EXTENSION recoverable_msg;
CREATE ROLE app;
CREATE FUNCTION public.q_handler(bytea) RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION public.i_handler(text, bytea) RETURNS void LANGUAGE sql AS '';
SELECT rmsg.create_queue('q1');
SELECT rmsg.create_queue('q2', dedup => 'content');
SELECT rmsg.create_queue('hq');
SELECT rmsg.put('q1', 'm' || g) FROM generate_series(1, 5) g;
SELECT rmsg.put('q2', convert_to(repeat('x', 3000), 'UTF8'));
SELECT rmsg.subscribe('hq', 'public.q_handler(bytea)');
SELECT rmsg.grant_queue('q1', 'app', 'put');
SELECT rmsg.create_instance('inst1', '{"n": 1}');
SELECT rmsg.create_instance('inst2');
SELECT rmsg.deliver('inst1', 'a');
SELECT rmsg.begin_recovery('inst1');
SELECT rmsg.deliver('inst1', 'b');
SELECT rmsg.deliver('inst1', 'r', 'recovery');
SELECT rmsg.grant_instance('inst1', 'app', 'receive');
SELECT rmsg.set_handler('zz', 'public.i_handler(text, bytea)');
SELECT rmsg.restart('orders');
SELECT rmsg.record_reply('orders', (rmsg.prepare_call('orders', 'billing', 'req1')).call_id, 'rep1');
SELECT (rmsg.prepare_call('orders', 'shipping', 'req2')).call_id;
BEGIN;
SELECT status FROM rmsg.accept_call('billing', 'orders', 1, 'req1');
SELECT rmsg.reply('billing', 'orders', 1, 'done');
COMMIT;
SELECT rmsg.grant_component('orders', 'app', 'use');
});
my ($inflight, $receipt) = split /\|/,
  $ps->("SELECT msg_id, receipt FROM rmsg.get('q1', visibility => '1 hour')");
my $ready = $ps->(
	"SELECT min(msg_id) FROM rmsg.message m WHERE queue_id = 1"
	  . " AND NOT EXISTS (SELECT FROM rmsg.lease l WHERE l.msg_id = m.msg_id)");
ok($inflight && $receipt && $ready, 'the primary has a message in flight and a ready one');
is( $ps->(q{
	SELECT deferred || ':' || mode FROM rmsg.instances WHERE instance = 'inst1'}),
	'2:recovery',
	'the primary has an instance in recovery whose two normal messages are deferred');

# The primary's worker runs: the standby's stopped one below is therefore
# the standby's doing, not the settings'.
ok( $primary->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM rmsg.worker WHERE pid IS NOT NULL AND state <> 'stopped'"),
	'the worker runs on the primary');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('sb_standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
# Something written after the backup, which only streaming brings over.
$ps->("SELECT rmsg.put('q1', 'after the backup'::text)");
$primary->wait_for_catchup($standby);

my $ss = sub { return $standby->safe_psql('postgres', $_[0]); };
is($ss->('SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');
is($ss->("SELECT count(*) FROM rmsg.message WHERE queue_id = 1"),
	'6', 'the standby has replayed the puts, the last one streamed');

# A log line written by a worker (its backend type, from %b), or by the
# postmaster about one.  The test's own statements, logged with
# log_statement = all, name the type too, so a plain match would not do.
sub worker_line
{
	my ($line) = @_;
	return $line =~ /\] recoverable_msg worker / || $line =~ /background worker "recoverable_msg/;
}

#---------------------------------------------------------------------------
# 1. The worker does not start on the standby.  Watched for a few seconds
#    (several naptimes): rmsg.worker shows its slot stopped, no process of
#    its type exists, and the standby's log has no ERROR or FATAL line and
#    no line from a worker.  The log is read now, before the refusals below
#    write their ERROR lines to it.
#---------------------------------------------------------------------------
for my $round (1 .. 3)
{
	sleep 1;
	is( $ss->(q{
		SELECT count(*) || ':' || count(*) FILTER (WHERE pid IS NULL AND state = 'stopped')
		  FROM rmsg.worker}),
		'1:1',
		"round $round: rmsg.worker on the standby shows its one slot stopped, without a pid");
	is( $ss->(q{
		SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'recoverable_msg worker'}),
		'0', "round $round: no worker process on the standby");
	my $log = slurp_file($standby->logfile);
	my @bad = grep { /\b(ERROR|FATAL|PANIC):/ || worker_line($_) } split /\n/, $log;
	is(join("\n", @bad), '',
		"round $round: the standby's log has no ERROR, FATAL or worker line");
}

#---------------------------------------------------------------------------
# 2. Readers work on the standby and read what the primary wrote.
#---------------------------------------------------------------------------
my @readers = (
	[ 'rmsg.load_state(text)', q{SELECT rmsg.load_state('inst1')} ],
	[ 'rmsg.replay(text)', q{SELECT call_id || ':' || callee || ':' || coalesce(encode(reply, 'escape'), '-') FROM rmsg.replay('orders')} ],
	[ 'rmsg.has_queue_privilege(text,text)', q{SELECT rmsg.has_queue_privilege('q1', 'put')} ],
	[ 'rmsg.has_queue_privilege(regrole,text,text)', q{SELECT rmsg.has_queue_privilege('app', 'q1', 'put')} ],
	[ 'rmsg.has_instance_privilege(text,text)', q{SELECT rmsg.has_instance_privilege('inst1', 'receive')} ],
	[ 'rmsg.has_instance_privilege(regrole,text,text)', q{SELECT rmsg.has_instance_privilege('app', 'inst1', 'receive')} ],
	[ 'rmsg.has_component_privilege(text,text)', q{SELECT rmsg.has_component_privilege('orders', 'use')} ],
	[ 'rmsg.has_component_privilege(regrole,text,text)', q{SELECT rmsg.has_component_privilege('app', 'orders', 'use')} ],
);
for my $r (@readers)
{
	my ($name, $sql) = @$r;
	my $want = $ps->($sql);
	my ($rc, $out, $err) = $standby->psql('postgres', $sql);
	is("$rc|$out|$err", "0|$want|", "$name reads on the standby what it reads on the primary");
}

# The VOLATILE functions that only read shared memory (the counters and the
# worker slots behind the views) and the session's token.  Their figures
# are the standby's own, so only that they answer is compared.
my %volatile_readers = (
	'rmsg.stat_log()' => 'SELECT count(*) FROM rmsg.stat_log()',
	'rmsg.stat_queues()' => 'SELECT count(*) >= 0 FROM rmsg.stat_queues()',
	'rmsg.stat_components()' => 'SELECT count(*) >= 0 FROM rmsg.stat_components()',
	'rmsg.stat_worker()' => 'SELECT count(*) FROM rmsg.stat_worker()',
	'rmsg.queue_counters()' => 'SELECT count(*) >= 0 FROM rmsg.queue_counters()',
	'rmsg.last_data_token()' => 'SELECT rmsg.last_data_token() IS NULL',
	'rmsg.metrics()' => q{SELECT rmsg.metrics() LIKE '%rmsg_queue_messages{queue="q1",state="ready"}%'},
);
my %reader_want = (
	'rmsg.stat_log()' => '1',
	'rmsg.stat_worker()' => '1',
);
for my $name (sort keys %volatile_readers)
{
	my ($rc, $out, $err) = $standby->psql('postgres', $volatile_readers{$name});
	is("$rc|$out|$err", '0|' . ($reader_want{$name} // 't') . '|',
		"$name (VOLATILE, reads only) works on the standby");
}

# Every view of the schema.  Those over tables show the primary's rows;
# those over shared memory show the standby's own (its worker slot, its
# counters, its empty called-component table).
my %shared_memory_view = map { $_ => 1 } qw(log_stats called_components worker);
my @views = split /\n/, $ss->(q{
	SELECT c.relname FROM pg_class c
	 WHERE c.relnamespace = 'rmsg'::regnamespace AND c.relkind = 'v' ORDER BY 1});
is(scalar(@views), 10, 'the schema has ten views: ' . join(', ', @views));
for my $v (@views)
{
	my ($rc, $out, $err) = $standby->psql('postgres', "SELECT count(*) FROM (SELECT * FROM rmsg.$v) v");
	if ($shared_memory_view{$v})
	{
		is("$rc|$err", '0|', "view rmsg.$v reads on the standby ($out rows)");
	}
	else
	{
		my $want = $ps->("SELECT count(*) FROM rmsg.$v");
		is("$rc|$out|$err", "0|$want|",
			"view rmsg.$v shows on the standby the primary's $want rows");
	}
}

#---------------------------------------------------------------------------
# 3. Every writer refuses with 25006, in its own words, before anything.
#
# The arguments are valid: existing queues, messages (the receipt is the
# live lease's), instances, callers, callees, roles and handlers, so that on
# a primary each call would do its work; only the standby stops it.  In 1.0
# get and ack failed later with XX000, and accept_call answered 'new'.
#---------------------------------------------------------------------------
my %calls = (
	'rmsg.create_queue(text,integer,text,text,interval)' => q{SELECT rmsg.create_queue('q3')},
	'rmsg.drop_queue(text)' => q{SELECT rmsg.drop_queue('q2')},
	'rmsg.pause_queue(text)' => q{SELECT rmsg.pause_queue('q1')},
	'rmsg.resume_queue(text)' => q{SELECT rmsg.resume_queue('q1')},
	'rmsg.purge_queue(text)' => q{SELECT rmsg.purge_queue('q1')},
	'rmsg.redrive(text,text,integer)' => q{SELECT rmsg.redrive('q1', 'q2')},
	'rmsg.put(text,bytea,jsonb,interval,bigint,text,text,integer)' => q{SELECT rmsg.put('q1', '\x01'::bytea, dedup_id => 'k', group_id => 'g', priority => 2)},
	'rmsg.put(text,text,jsonb,interval,bigint,text,text,integer)' => q{SELECT rmsg.put('q1', 'x'::text, group_id => 'g')},
	'rmsg.put(text,jsonb,jsonb,interval,bigint,text,text,integer)' => q{SELECT rmsg.put('q1', '{"a": 1}'::jsonb, dedup_id => 'k')},
	'rmsg.put_batch(text,bytea[],jsonb,text,integer)' => q{SELECT * FROM rmsg.put_batch('q1', ARRAY['\x01'::bytea, '\x02'], group_id => 'g', priority => 9)},
	'rmsg.put_with_token(text,bytea,jsonb,interval,bigint,text,text,integer)' => q{SELECT * FROM rmsg.put_with_token('q1', '\x01'::bytea)},
	'rmsg.forward(bigint,text,text,integer)' => "SELECT rmsg.forward($ready, 'q2', 'g', 1)",
	'rmsg.put_many(text[],bytea,jsonb,text,integer)' => q{SELECT * FROM rmsg.put_many(ARRAY['q1', 'q2'], '\x01'::bytea, group_id => 'g')},
	'rmsg.collect_payloads()' => q{SELECT rmsg.collect_payloads()},
	'rmsg.create_remote_queue(text,text,text)' => q{SELECT rmsg.create_remote_queue('rq', 'nowhere', 'q1')},
	'rmsg.accept_transfer(text,text,bigint,bytea[],jsonb[],bigint[],text)' => q{SELECT rmsg.accept_transfer('ch', 'q1', 1, ARRAY[NULL]::bytea[], NULL, ARRAY[7], 'o')},
	'rmsg.set_callee_handler(text,regprocedure)' => q{SELECT rmsg.set_callee_handler('billing', NULL)},
	'rmsg.serve_call(text,text,bigint,bytea)' => q{SELECT rmsg.serve_call('billing', 'orders', 9, 'req9')},
	'rmsg.call(text,text,text,bytea)' => q{SELECT rmsg.call('orders', 'nowhere', 'billing', 'req9')},
	'rmsg.get(text,integer,interval,interval)' => q{SELECT * FROM rmsg.get('q1')},
	'rmsg.ack(bigint)' => "SELECT rmsg.ack(${ready}::bigint)",
	'rmsg.ack(bigint[])' => "SELECT rmsg.ack(ARRAY[$ready]::bigint[])",
	'rmsg.ack(bigint,bigint)' => "SELECT rmsg.ack(${inflight}::bigint, ${receipt}::bigint)",
	'rmsg.ack(bigint[],bigint[])' => "SELECT rmsg.ack(ARRAY[$inflight]::bigint[], ARRAY[$receipt]::bigint[])",
	'rmsg.nack(bigint,interval,bigint)' => "SELECT rmsg.nack($inflight, NULL, $receipt)",
	'rmsg.extend(bigint,interval,bigint)' => "SELECT rmsg.extend($inflight, '1 minute', $receipt)",
	'rmsg.prepare_call(text,text,bytea)' => q{SELECT * FROM rmsg.prepare_call('orders', 'billing', 'req3')},
	'rmsg.record_reply(text,bigint,bytea)' => q{SELECT rmsg.record_reply('orders', 2, 'rep2')},
	'rmsg.force_log(text)' => q{SELECT rmsg.force_log('orders')},
	'rmsg.checkpoint(text,jsonb)' => q{SELECT rmsg.checkpoint('orders', '{"at": 2}')},
	'rmsg.restart(text)' => q{SELECT rmsg.restart('orders')},
	'rmsg.accept_call(text,text,bigint,bytea)' => q{SELECT * FROM rmsg.accept_call('billing', 'orders', 3, 'req3')},
	'rmsg.reply(text,text,bigint,bytea)' => q{SELECT rmsg.reply('billing', 'orders', 3, 'rep3')},
	'rmsg.create_instance(text,jsonb)' => q{SELECT rmsg.create_instance('inst3')},
	'rmsg.drop_instance(text)' => q{SELECT rmsg.drop_instance('inst2')},
	'rmsg.begin_recovery(text)' => q{SELECT rmsg.begin_recovery('inst2')},
	'rmsg.deliver(text,bytea,text,jsonb)' => q{SELECT * FROM rmsg.deliver('inst1', 'c')},
	'rmsg.receive(text,integer,interval)' => q{SELECT * FROM rmsg.receive('inst1')},
	'rmsg.receive_any(integer,interval)' => q{SELECT * FROM rmsg.receive_any()},
	'rmsg.save_state(text,jsonb)' => q{SELECT rmsg.save_state('inst1', '{"n": 2}')},
	'rmsg.complete_recovery(text,jsonb)' => q{SELECT rmsg.complete_recovery('inst1')},
	'rmsg.subscribe(text,regprocedure,integer,integer,numeric)' => q{SELECT rmsg.subscribe('q1', 'public.q_handler(bytea)', concurrency => 1, rate => 5)},
	'rmsg.unsubscribe(text)' => q{SELECT rmsg.unsubscribe('hq')},
	'rmsg.set_handler(text,regprocedure)' => q{SELECT rmsg.set_handler('inst', 'public.i_handler(text, bytea)')},
	'rmsg.remove_handler(text)' => q{SELECT rmsg.remove_handler('zz')},
	'rmsg.grant_queue(text,regrole,text)' => q{SELECT rmsg.grant_queue('q2', 'app', 'get')},
	'rmsg.revoke_queue(text,regrole,text)' => q{SELECT rmsg.revoke_queue('q1', 'app', 'put')},
	'rmsg.grant_instance(text,regrole,text)' => q{SELECT rmsg.grant_instance('inst2', 'app', 'deliver')},
	'rmsg.revoke_instance(text,regrole,text)' => q{SELECT rmsg.revoke_instance('inst1', 'app', 'receive')},
	'rmsg.grant_component(text,regrole,text)' => q{SELECT rmsg.grant_component('billing', 'app', 'use')},
	'rmsg.revoke_component(text,regrole,text)' => q{SELECT rmsg.revoke_component('orders', 'app', 'use')},
	'rmsg.alter_queue_owner(text,regrole)' => q{SELECT rmsg.alter_queue_owner('q2', 'app')},
	'rmsg.alter_instance_owner(text,regrole)' => q{SELECT rmsg.alter_instance_owner('inst2', 'app')},
	'rmsg.alter_component_owner(text,regrole)' => q{SELECT rmsg.alter_component_owner('billing', 'app')},
);

# What a refusal could disturb besides the tables, none of which a
# read-only transaction protects: the shared-memory counters, the
# called-component table and the worker slot.  Timestamps stay in: they
# move only when something is counted.
my $shared_sql = q{
	SELECT (SELECT string_agg(s::text, ',') FROM rmsg.stat_log() s)
	    || ';' || coalesce((SELECT string_agg(s::text, ',' ORDER BY s::text) FROM rmsg.stat_queues() s), '')
	    || ';' || coalesce((SELECT string_agg(s::text, ',' ORDER BY s::text) FROM rmsg.stat_components() s), '')
	    || ';' || (SELECT string_agg(s::text, ',') FROM rmsg.stat_worker() s)};

# A fingerprint of every table of the extension: its row count and an md5
# of its rows in text form.  (Sequences are left out: a standby shows the
# value the primary logged ahead, not the primary's own.)
my @tables = split /\n/, $ps->(q{
	SELECT c.relname FROM pg_class c
	 WHERE c.relnamespace = 'rmsg'::regnamespace AND c.relkind = 'r' ORDER BY 1});
my $fingerprint_sql = join("\nUNION ALL\n",
	map {
		"SELECT '$_:' || count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM rmsg.$_ t"
	} @tables);
is(scalar(@tables), 21, 'the extension has 21 tables');

my $before_tables = $ss->($fingerprint_sql);
my $before_shared = $ss->($shared_sql);

my @writers = split /\n/, $ss->(q{
	SELECT p.oid::regprocedure FROM pg_proc p
	 WHERE p.pronamespace = 'rmsg'::regnamespace AND p.provolatile = 'v' ORDER BY 1});
@writers = grep { !exists $volatile_readers{$_} } @writers;
is(scalar(@writers), scalar(keys %calls),
	'the catalog lists as many VOLATILE writers as this file has calls for');

# One session for all of them: a refusal must also leave the session able
# to go on, and its data token untouched.
my $s = session_open($standby, 'refusals');
for my $f (@writers)
{
	if (!exists $calls{$f})
	{
		fail("$f: no call written for this VOLATILE function in 015; add one");
		next;
	}
	(my $short = $f) =~ s/\(.*//;
	my ($out, $err) = session_wait($s, session_send($s, "$calls{$f};"), 60);
	$err //= 'timeout';
	like($err, qr/ERROR:  25006: cannot execute \Q$short\E during recovery/,
		"$f refuses on the standby with 25006 at its start")
	  or diag("output: " . ($out // '') . "\nerror: $err");
}
my %listed = map { $_ => 1 } @writers;
for my $f (sort keys %calls)
{
	ok($listed{$f}, "$f, which this file calls, is a VOLATILE function of rmsg");
}
is(session_query($s, 'SELECT rmsg.last_data_token() IS NULL;', 'token after the refusals'),
	't', 'the refused puts and gets left the session no data token');
is(session_query($s, q{SELECT rmsg.load_state('inst1');}, 'load_state after the refusals'),
	'{"n": 1}', 'the session reads after its refusals');
session_kill($s);

#---------------------------------------------------------------------------
# 4. Nothing moved: the standby's tables and shared memory are as before,
#    the standby agrees with the primary, and it did not crash.
#---------------------------------------------------------------------------
is($ss->($shared_sql), $before_shared,
	"the refusals changed none of the standby's shared-memory counters, components or worker slot");
my $after_tables = $ss->($fingerprint_sql);
is($after_tables, $before_tables, "the standby's tables are as they were before the refusals");
my $primary_tables = $ps->($fingerprint_sql);
$primary->wait_for_catchup($standby);
is($ss->($fingerprint_sql), $primary_tables,
	'the standby and the primary hold the same rows in every table');
is($ss->('SELECT pg_is_in_recovery()'), 't', 'the standby is still a standby');
# Streaming still works after the refusals.
$ps->("SELECT rmsg.put('q1', 'after the refusals'::text)");
$primary->wait_for_catchup($standby);
is($ss->("SELECT count(*) FROM rmsg.message WHERE queue_id = 1"),
	'7', 'and replays what the primary writes next');

# The test clusters run with restart_after_crash = off, so a crashed
# backend would also have stopped the standby and failed the queries above;
# the log says which process it was.
my $log = slurp_file($standby->logfile);
my @crash = grep { /PANIC|terminated by signal|was terminated|server process .* exited|all server processes terminated/ }
  split /\n/, $log;
is(join("\n", @crash), '', 'the standby logged no PANIC and no crashed process');
my @worker_lines = grep { worker_line($_) } split /\n/, $log;
is(join("\n", @worker_lines), '', 'nor any line of a worker');

$standby->stop;
$primary->stop;
done_testing();
