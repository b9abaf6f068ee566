use strict;
use warnings FATAL => 'all';

# Failover to a synchronous standby under load, with the background worker
# handling messages on both sides of it.
#
# The primary streams to a standby that it names in
# synchronous_standby_names, with synchronous_commit = on: a commit is
# acknowledged to the client only once the standby has flushed its WAL.  So
# a put that came back with a msg_id exists on the standby, whatever happens
# to the primary a moment later.  Four producers put messages with unique
# payloads in a loop (one of them three at a time with put_batch), and this
# file remembers, on the Perl side, every payload whose put came back with a
# msg_id.  Meanwhile the primary's worker calls a handler that records each
# message in the table "handled", in the transaction that acks the message.
# In the middle of the load the primary's WAL sender is frozen, so that the
# producers and the worker commit on the primary and wait for the standby;
# then the primary is crashed (immediate stop) and the standby promoted.
#
#  1. Before the crash: the standby is synchronous, its views read while
#     the load runs, its worker does not run, and a put there is refused
#     (015 tests every refusal; this is only a smoke check).
#  2. After the promotion, every acknowledged put is on the new primary,
#     under the msg_id its put returned.  A put whose answer the crash cut
#     off (its outcome unknown: "maybe") is there whole or not at all, and
#     nothing is there that no producer sent.
#  3. No message is both handled and still queued, at any moment: the
#     handler's row and the ack commit together on the old primary and
#     reach the standby together.
#  4. The worker starts on the new primary (the time it takes is printed;
#     the bound asserted is generous, this is not a benchmark), drains the
#     queue, and handles each message once: "handled" has unique keys, so a
#     second handling of a message would make the handler fail, and the
#     handler never fails, nothing is dead, and the new worker's counter
#     matches the rows it wrote.
#  5. A lease that an outside consumer took on the old primary holds on the
#     new one until it runs out; the message is handled after that.
#  6. Transactions prepared on the old primary survive the failover: the
#     one committed on the new primary is handled, the one rolled back
#     never is.
#  7. The old primary, started again on its own, holds the worker's last
#     transaction, which never reached the standby: the messages it had
#     handled were handled again on the new primary, once each.

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

# How long the producers run before the crash, and how far each may run
# ahead of the answers it has read (its statements wait in psql's input).
# The window's statements must fit in the pipe to psql (64 kB; a put_batch
# statement is about 150 bytes): what is still to be written when psql exits
# could not be.
my $LOAD_SECONDS = 3;
my $WINDOW       = 200;
# Each put first sleeps this long (in the same statement, so before it
# commits): it holds the producers back enough that the queue left at the
# failover (they put faster than the worker handles) drains in seconds,
# while every producer stays busy in the server.
my $PAUSE = '0.001';
# The outside consumer's lease: long enough to outlast the crash and the
# promotion, so that the new primary must respect it.
my $LEASE_SECONDS = 12;
# The generous bound on the worker's start after the promotion.
my $WORKER_START_BOUND = 10;

#---------------------------------------------------------------------------
# The primary, with one worker serving database postgres.  A short naptime
# makes the worker notice a lease that ran out within a second.  %b in the
# log lines names the process type (the worker's lines say so).
#---------------------------------------------------------------------------
my $primary = new_node(
	'f_primary',
	allows_streaming => 1,
	workers          => 1,
	conf             => q{
rmsg.database = 'postgres'
rmsg.worker_naptime = '1s'
max_prepared_transactions = 10
synchronous_commit = on
log_line_prefix = '%m [%p] %b %q%a '
});

# The handler writes the message to "handled" in the worker's transaction.
# Both keys are unique: a message handled twice would fail there instead of
# leaving a second row, and the failure would show in rmsg.handlers.
# "node" is the server that ran the handler: cluster_name, which the test
# framework sets per server on the command line (it is not copied to the
# standby with the configuration).
$primary->safe_psql(
	'postgres', q{
CREATE EXTENSION recoverable_msg;
CREATE TABLE handled (
    msg_id  bigint PRIMARY KEY,
    payload text NOT NULL UNIQUE,
    node    text NOT NULL DEFAULT current_setting('cluster_name'),
    at      timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION handle_work(p bytea, h jsonb, id bigint) RETURNS void LANGUAGE sql AS $$
    INSERT INTO public.handled (msg_id, payload) VALUES (id, convert_from(p, 'UTF8'))
$$;
SELECT rmsg.create_queue('work');
SELECT rmsg.subscribe('work', 'handle_work(bytea,jsonb,bigint)', 5);
});
ok( $primary->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM rmsg.worker WHERE pid IS NOT NULL AND state <> 'stopped'}),
	'the worker runs on the primary');

#---------------------------------------------------------------------------
# The standby, from a backup, streaming.  The walreceiver connects with its
# cluster_name as application_name, which is what the primary names in
# synchronous_standby_names.  The setting is added only after the backup:
# the standby must not inherit it, because once promoted it has no standby
# of its own and every commit would wait for one forever.
#---------------------------------------------------------------------------
$primary->backup('f_backup');
my $standby = PostgreSQL::Test::Cluster->new('f_standby');
$standby->init_from_backup($primary, 'f_backup', has_streaming => 1);
$standby->start;
$primary->append_conf('postgresql.conf', "synchronous_standby_names = 'f_standby'");
$primary->reload;
ok( $primary->poll_query_until('postgres',
		q{SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 'f_standby'}),
	'pg_stat_replication: the standby is synchronous');
is($primary->safe_psql('postgres', 'SHOW synchronous_commit'),
	'on', 'synchronous_commit is on: a commit waits for the standby to flush it');
is($standby->safe_psql('postgres', 'SHOW synchronous_standby_names'),
	'', 'the standby names no synchronous standby of its own');

my $ps = sub { return $primary->safe_psql('postgres', $_[0]); };
my $ss = sub { return $standby->safe_psql('postgres', $_[0]); };

# Two prepared transactions, each with a put: PREPARE waits for the standby
# like a commit, so both are there for the new primary to finish.
my %prepared_id;
for my $gid (qw(to_commit to_roll_back))
{
	$prepared_id{$gid} = $ps->(qq{
BEGIN;
SELECT rmsg.put('work', 'prepared-$gid'::text);
PREPARE TRANSACTION '$gid';});
}
like("$prepared_id{to_commit} $prepared_id{to_roll_back}",
	qr/^\d+ \d+$/, 'two transactions with a put each are prepared on the primary');

#---------------------------------------------------------------------------
# The producers: psql processes fed statements through a pipe, at most
# $WINDOW ahead of the answers read so far.  Statement $i of producer $k
# puts payload "p$k-$i" (producer 4: "p4-$i-a", "-b" and "-c" with
# put_batch, in one transaction) and prints "$i <msg_ids>" once its commit
# returned.  psql prints a result only after the server's CommandComplete,
# which follows the commit, and it exits when the connection is lost: so
# the statement after the last one printed is the one the crash cut off
# (it may or may not have committed), and none after it was ever sent.
#---------------------------------------------------------------------------
my @producers;
for my $k (1 .. 4)
{
	my $p = {
		k        => $k,
		batch    => $k == 4,
		in       => '',
		out      => '',
		err      => '',
		sent     => 0,
		answered => 0,
		ids      => {},    # statement number -> the msg_ids it printed
		stray    => [],    # output lines that are no answer
	};
	$p->{h} = IPC::Run::start(
		[
			'psql', '-XAtq', '-v', 'ON_ERROR_STOP=0', '-d',
			$primary->connstr('postgres') . " application_name=producer$k"
		],
		'<', \$p->{in}, '>', \$p->{out}, '2>', \$p->{err},
		($p->{timeout} = IPC::Run::timeout(300)));
	push @producers, $p;
}

sub payloads_of
{
	my ($p, $i) = @_;
	return $p->{batch} ? map { "p$p->{k}-$i-$_" } qw(a b c) : ("p$p->{k}-$i");
}

sub statement_of
{
	my ($p, $i) = @_;
	my @pl = payloads_of($p, $i);
	return "SELECT '$i ' || rmsg.put('work', '$pl[0]'::text) FROM pg_sleep($PAUSE);\n"
	  unless $p->{batch};
	my $arr = join(', ', map { "'$_'::bytea" } @pl);
	return "SELECT '$i ' || string_agg(id::text, ',') FROM pg_sleep($PAUSE), "
	  . "rmsg.put_batch('work', ARRAY[$arr]) id;\n";
}

# Reads what a producer printed and gives it more statements to run.  (A
# finished harness is not pumped: IPC::Run would start psql again, and
# empty the output read so far.)
sub pump_producer
{
	my ($p, $feed) = @_;
	eval { $p->{h}->pump_nb; } unless $p->{finished};
	while ($p->{out} =~ s/\A([^\n]*)\n//)
	{
		my $line = $1;
		if ($line =~ /^(\d+) ([\d,]+)$/)
		{
			$p->{ids}{$1} = [ split /,/, $2 ];
			$p->{answered} = $1;
		}
		else
		{
			push @{ $p->{stray} }, $line;
		}
	}
	return unless $feed;
	while ($p->{sent} - $p->{answered} < $WINDOW)
	{
		$p->{in} .= statement_of($p, ++$p->{sent});
	}
	eval { $p->{h}->pump_nb; };
	return;
}

# Keeps the producers going for $seconds.
sub load_for
{
	my ($seconds) = @_;
	my $end = time + $seconds;
	while (time < $end)
	{
		pump_producer($_, 1) for @producers;
		usleep(2_000);
	}
	return;
}

sub answered_total
{
	my $n = 0;
	$n += scalar(keys %{ $_->{ids} }) for @producers;
	return $n;
}

#---------------------------------------------------------------------------
# 1. Load, and the standby while it runs.
#---------------------------------------------------------------------------
my $load_start = time;
load_for(0.5);
ok(answered_total() > 0, 'the producers are putting messages: ' . answered_total() . ' puts so far');

# An outside consumer leases one message and never acks it.  Its lease
# commits lazily (without waiting for the WAL flush, let alone the
# standby), but the producers' synchronous commits that follow carry it to
# the standby.
my ($leased_id, $lease_until) = ('', '');
for (1 .. 100)
{
	$leased_id = $ps->(qq{SELECT msg_id FROM rmsg.get('work', visibility => '$LEASE_SECONDS seconds')});
	last if $leased_id ne '';
	load_for(0.02);
}
$lease_until = $ps->("SELECT lease_until FROM rmsg.lease WHERE msg_id = $leased_id")
  if $leased_id ne '';
like($leased_id, qr/^\d+$/, "an outside consumer leased message $leased_id for $LEASE_SECONDS s");
load_for(0.3);

is($ps->(q{SELECT sync_state FROM pg_stat_replication WHERE application_name = 'f_standby'}),
	'sync', 'under load, the standby is still the synchronous one');

# The standby's views read while the load runs.
is($ss->(q{SELECT count(*) FROM rmsg.queues WHERE queue = 'work'}),
	'1', 'rmsg.queues reads on the standby under load');
is( $ss->(q{SELECT kind || ' ' || target || ' ' || handler || ' ' || batch FROM rmsg.handlers}),
	'queue work handle_work(bytea,jsonb,bigint) 5',
	'rmsg.handlers on the standby shows the subscription');
is( $ss->(q{SELECT count(*) || ':' || count(*) FILTER (WHERE pid IS NULL AND state = 'stopped')
	              FROM rmsg.worker}),
	'1:1', 'rmsg.worker on the standby shows its one slot stopped');
is($ss->(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'recoverable_msg worker'}),
	'0', 'no worker process runs on the standby');

# Replay keeps up: the standby sees more handled messages a moment later,
# and in every snapshot of it no message is both handled and still queued.
my $handled_before = $ss->('SELECT count(*) FROM handled');
load_for(0.5);
my ($handled_after, $both) = split /\|/, $ss->(q{
	SELECT (SELECT count(*) FROM handled) || '|'
	    || (SELECT count(*) FROM handled h JOIN rmsg.message m USING (msg_id))});
cmp_ok($handled_after, '>', $handled_before,
	"the standby replays the worker's handling as it goes ($handled_before, then $handled_after handled)");
is($both, '0', 'on the standby, no message is both handled and still queued');

# The refusals, as a smoke check (015 covers every writer).
my ($rc, $out, $err) = $standby->psql('postgres', q{SELECT rmsg.put('work', 'on the standby'::text)});
like($err, qr/ERROR:  cannot execute rmsg\.put during recovery/,
	'a put on the standby is refused');

load_for($LOAD_SECONDS - (time - $load_start));

#---------------------------------------------------------------------------
# The crash, in the middle of the load.  First the primary's WAL sender is
# frozen (SIGSTOP), as a network that stops delivering would: commits then
# happen on the primary but wait for the standby, so the crash finds every
# producer, and the worker, with a transaction committed on the primary
# that will never reach the standby (7 looks at them on the old primary).
# (Freezing the standby's WAL receiver instead would not do: what the
# sender had written to the socket would still be read once it thawed.)
# The immediate stop then ends every process of the primary at once but
# the frozen sender, which the postmaster kills after 5 s.
#
# The producers have their whole window of statements in psql's input
# pipe; after the crash each psql fails the statement it was in, on the
# lost connection, and exits.  finish reads it to its end (polling whether
# it still runs before reading could reap it first and lose what it
# printed last).
#
# The worker must have messages to handle when the sender freezes (the
# producers alone may not outpace it): 3,000 put at once just before take it
# more than a second.  (500 were drained before the sender froze once a
# lease stopped writing the message row: the worker then sat idle until
# the outside consumer's lease ran out, its handling the only one left to
# wait for the standby.)
#
# Section 7 needs the worker's waiting transaction to be one that handled
# messages and that never reached the standby.  A sender may have written
# the worker's commit to the socket just before it froze: the standby then
# holds it, but its answer cannot come back through the frozen sender, so
# the worker still waits.  Which of the two it is shows on the standby once
# it has replayed all it received: the status of the worker's xid there.
# When the commit got through (or the worker waits on other work), the
# sender is thawed and the burst and the freeze are tried again.
#---------------------------------------------------------------------------
my $BURST = 3000;
my $waiting_sql = q{
	SELECT count(*) FILTER (WHERE application_name LIKE 'producer%') || '/'
	    || count(*) FILTER (WHERE backend_type = 'recoverable_msg worker')
	  FROM pg_stat_activity WHERE wait_event = 'SyncRep'};
# The waiting worker's work and its xid, as a full 64-bit one: the epoch is
# that of the primary's snapshot xmax, one more or one less when the xid is
# half the xid space away from it (the waiting commits are not completed,
# so the worker's xid may be above that xmax).
my $worker_xid_sql = q{
	SELECT query || '|'
	    || (f + CASE WHEN f > s + 2147483648 THEN -4294967296
	                 WHEN f < s - 2147483648 THEN 4294967296 ELSE 0 END)
	  FROM (SELECT query, s, ((s >> 32) << 32) | backend_xid::text::bigint AS f
	          FROM pg_stat_activity,
	               CAST(pg_snapshot_xmax(pg_current_snapshot())::text AS bigint) AS s
	         WHERE backend_type = 'recoverable_msg worker' AND wait_event = 'SyncRep') w};
my (@burst_payloads, @burst_ids, $walsender, $waiting, $freeze_attempts, $handling_unsent);
for my $attempt (1 .. 5)
{
	$freeze_attempts = $attempt;
	push @burst_payloads, map { "burst$attempt-$_" } 1 .. $BURST;
	push @burst_ids, split /,/, $ps->(qq{
		SELECT string_agg(id::text, ',') FROM rmsg.put_batch('work',
		       ARRAY(SELECT convert_to('burst$attempt-' || i, 'UTF8')
		               FROM generate_series(1, $BURST) i)) id});
	$walsender = $ps->(q{SELECT pid FROM pg_stat_replication WHERE application_name = 'f_standby'});
	kill('STOP', $walsender) or die "cannot freeze the WAL sender $walsender: $!";
	$waiting = '';
	for (1 .. 250)
	{
		pump_producer($_, 1) for @producers;
		$waiting = $ps->($waiting_sql);
		last if $waiting eq '4/1';
		usleep(20_000);
	}
	last unless $waiting eq '4/1';    # fails below
	my ($work, $xid) = split /\|/, $ps->($worker_xid_sql);

	# The standby receives nothing more; wait until it has replayed what it
	# got: neither its received position nor its replayed one moves (the
	# last record it got may be cut short, so they need not be equal).
	my ($received, $positions) = ('', '');
	for (1 .. 100)
	{
		my $now = $ss->(q{SELECT pg_last_wal_receive_lsn() || '|' || pg_last_wal_replay_lsn()});
		last if $now eq $positions;
		$positions = $now;
		usleep(200_000);
	}
	($received) = split /\|/, $positions;
	# An xid the standby never heard of is "in the future" there (an error).
	my ($rc, $status) = $standby->psql('postgres', "SELECT pg_xact_status('$xid'::xid8)");
	$status = 'unknown' if $rc != 0;
	note("attempt $attempt: the waiting worker is $work (xid $xid); on the standby, "
		  . "which received up to $received, that xid is $status");
	$handling_unsent =
	  $work =~ /handling queue messages/ && $xid =~ /^\d+$/ && $status ne 'committed';
	last if $handling_unsent;
	kill('CONT', $walsender) or die "cannot thaw the WAL sender $walsender: $!";
	load_for(0.3);
}
is($waiting, '4/1', 'the four producers and the worker wait for the standby (wait event SyncRep)');
ok($handling_unsent,
	"the WAL sender ($walsender) froze with the worker's handling not on the standby (attempt $freeze_attempts)");
my $crash_at = time;
$primary->stop('immediate');

for my $p (@producers)
{
	$p->{timeout}->start(20);
	ok(eval { $p->{h}->finish; 1 }, "producer $p->{k}: psql exited after the crash")
	  or eval { $p->{h}->kill_kill; };
	$p->{finished} = 1;
	pump_producer($p, 0);
}
is(scalar(grep { $_->{sent} > $_->{answered} } @producers),
	4, 'the crash found every producer with statements still to run');

# What each producer knows: the statements that answered are acknowledged;
# the next one is "maybe"; those after it were never sent to the server.
my (%acked, %maybe_group, %never);    # payload -> msg_id; stmt -> payloads; payload
my $maybe_count = 0;
for my $p (@producers)
{
	my $n = $p->{answered};
	my @gaps = grep { !$p->{ids}{$_} } 1 .. $n;
	is(scalar(@gaps), 0, "producer $p->{k}: statements 1 to $n all answered, in order");
	is(join("\n", @{ $p->{stray} }), '', "producer $p->{k}: printed nothing but answers");
	my @errors = grep { /ERROR:/ } split /\n/, $p->{err};
	is(join("\n", @errors), '', "producer $p->{k}: no statement failed before the crash")
	  or diag($p->{err});
	like($p->{err}, qr/terminating connection|server closed the connection|connection to server was lost/,
		"producer $p->{k}: lost its connection in the crash");
	for my $i (1 .. $n)
	{
		my @pl  = payloads_of($p, $i);
		my @ids = @{ $p->{ids}{$i} };
		is(scalar(@ids), scalar(@pl), "producer $p->{k}: statement $i returned one msg_id per payload")
		  unless @ids == @pl;
		@acked{@pl} = @ids;
	}
	if ($p->{sent} > $n)
	{
		$maybe_group{"$p->{k}-" . ($n + 1)} = [ payloads_of($p, $n + 1) ];
		$maybe_count++;
	}
	$never{$_} = 1 for map { payloads_of($p, $_) } $n + 2 .. $p->{sent};
}
is(scalar(@burst_ids), scalar(@burst_payloads), 'every message of the bursts was put: ' . scalar(@burst_ids));
@acked{@burst_payloads} = @burst_ids;
my $acked_count = scalar(keys %acked);
note("load: $acked_count puts acknowledged in " . sprintf('%.1f', $crash_at - $load_start)
	  . " s before the crash, $maybe_count cut off by it, "
	  . scalar(keys %never) . ' queued but never sent');

#---------------------------------------------------------------------------
# The promotion, and how soon the worker starts on the new primary.  A
# session opened on the standby beforehand watches (it stays connected
# through the promotion, so no connection time is counted).
#---------------------------------------------------------------------------
my $watch = session_open($standby, 'watch');
is(session_query($watch, 'SELECT pg_is_in_recovery();', 'watch session'), 't',
	'the watching session is connected to the standby, still in recovery');
my $log_offset = -s $standby->logfile;

my $promote_start = time;
$standby->promote;
my $promoted = time;
my ($seen_after, $worker_pid);
while (time - $promoted < $WORKER_START_BOUND + 5)
{
	my ($o) = session_wait($watch, session_send($watch, q{
		SELECT pid FROM pg_stat_activity WHERE backend_type = 'recoverable_msg worker';}), 10);
	if (defined $o && $o =~ /^(\d+)$/)
	{
		($seen_after, $worker_pid) = (time - $promoted, $1);
		last;
	}
	usleep(2_000);
}
ok(defined $seen_after, 'a worker process runs on the new primary');
$seen_after //= 999;
note(sprintf('worker seen %.3f s after pg_ctl promote returned (%.3f s after it was called; pg_ctl waits for the promotion in steps of 0.1 s)',
		$seen_after, $seen_after + $promoted - $promote_start));
cmp_ok($seen_after, '<', $WORKER_START_BOUND,
	"the worker started within $WORKER_START_BOUND s of the promotion");

# The same delay as the server saw it: from the log line that says the
# promoted server accepts connections (written when the postmaster leaves
# recovery, which is when it starts the workers) to the worker's own start.
my ($ready_ts) = slurp_file($standby->logfile, $log_offset)
  =~ /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+) .*database system is ready to accept connections/m;
ok(defined $ready_ts, 'the log says when the promoted server became ready');
$ready_ts //= 'now';
$worker_pid //= 0;
my ($delay, $state) = split /\|/, session_query($watch, qq{
	SELECT round(extract(epoch FROM started_at - '$ready_ts'::timestamptz), 3) || '|' || state
	  FROM rmsg.worker WHERE pid = $worker_pid;}, 'worker start time');
like($state // '', qr/^(starting|idle|handling|maintenance)$/,
	"rmsg.worker shows the new primary's worker at work ($state)");
note("worker process started $delay s after the server left recovery (server clock)");

# The new primary's state at once, in one snapshot.
my ($queued_at_promotion, $in_flight_at_promotion, $handled_at_promotion,
	$both_at_promotion, $recovery, $prepared_xacts)
  = split /\|/, session_query($watch, q{
	SELECT (SELECT count(*) FROM rmsg.message) || '|'
	    || (SELECT count(*) FROM rmsg.message m JOIN rmsg.lease l USING (msg_id)
	         WHERE l.lease_until > now()) || '|'
	    || (SELECT count(*) FROM handled) || '|'
	    || (SELECT count(*) FROM handled h JOIN rmsg.message m USING (msg_id)) || '|'
	    || pg_is_in_recovery()::text || '|'
	    || (SELECT string_agg(gid, ',' ORDER BY gid) FROM pg_prepared_xacts);},
	'snapshot after the promotion');
is($recovery, 'false', 'the standby is a primary now');
is($both_at_promotion, '0', 'right after the promotion, no message is both handled and queued');
is($prepared_xacts, 'to_commit,to_roll_back', 'both prepared transactions survived the failover');
note("at the promotion: $queued_at_promotion messages queued ($in_flight_at_promotion in flight), "
	  . "$handled_at_promotion handled");

# 5. The outside consumer's lease came over as it was.  (Only while it
# runs: once it ran out, the new worker may already have taken the
# message, which the checks after the drain see.)
my ($lease_now, $lease_running) = split /\|/, session_query($watch, qq{
	SELECT coalesce((SELECT l.lease_until::text FROM rmsg.message m JOIN rmsg.lease l USING (msg_id)
	                  WHERE msg_id = $leased_id), 'gone')
	    || '|' || (now() < '$lease_until'::timestamptz);},
	'the leased message');
SKIP:
{
	skip 'the lease ran out before the promotion was done', 1 unless $lease_running eq 'true';
	is($lease_now, $lease_until,
		'the leased message is on the new primary, its lease ending when it did on the old one');
}

# 6. The prepared transactions are finished on the new primary.
session_query($watch, q{COMMIT PREPARED 'to_commit';}, 'COMMIT PREPARED');
session_query($watch, q{ROLLBACK PREPARED 'to_roll_back';}, 'ROLLBACK PREPARED');
session_kill($watch);

#---------------------------------------------------------------------------
# 4. The worker drains the queue; 5. the leased message once its lease
# ran out.
#---------------------------------------------------------------------------
my $np = $standby;    # the new primary
my $nps = sub { return $np->safe_psql('postgres', $_[0]); };
ok($np->poll_query_until('postgres', q{SELECT count(*) = 0 FROM rmsg.message}),
	'the worker on the new primary drains the queue');
is( $nps->(q{SELECT ready || '/' || in_flight || '/' || delayed || '/' || dead
	             FROM rmsg.queues WHERE queue = 'work'}),
	'0/0/0/0', 'rmsg.queues: nothing ready, in flight, delayed or dead');
is($nps->('SELECT count(*) FROM rmsg.dead_message'), '0', 'no dead message');

my ($handled_at, $lease_end_epoch) = split /\|/, $nps->(qq{
	SELECT extract(epoch FROM at) || '|' || extract(epoch FROM '$lease_until'::timestamptz)
	  FROM handled WHERE msg_id = $leased_id});
ok(defined $lease_end_epoch, 'the leased message was handled');
$handled_at //= 0;
$lease_end_epoch //= 0;
cmp_ok($handled_at, '>=', $lease_end_epoch, 'not before its lease ran out');
cmp_ok($handled_at - $lease_end_epoch, '<', 5, 'and within a few seconds after (naptime 1 s)');

#---------------------------------------------------------------------------
# 2, 3 and 4. Every acknowledged put is there, handled once, under its
# msg_id; nothing else is.
#---------------------------------------------------------------------------
my %handled;    # payload -> [msg_id, the server that handled it]
for my $line (split /\n/, $nps->(q{SELECT payload || ' ' || msg_id || ' ' || node FROM handled}))
{
	my ($payload, $id, $node) = split / /, $line;
	$handled{$payload} = [ $id, $node ];
}
my ($total, $distinct_payloads, $distinct_ids) = split /\|/,
  $nps->(q{SELECT count(*) || '|' || count(DISTINCT payload) || '|' || count(DISTINCT msg_id) FROM handled});
is("$distinct_payloads/$distinct_ids", "$total/$total",
	"handled: $total rows, as many payloads and msg_ids (no message handled twice)");
my @missing = grep { !$handled{$_} } sort keys %acked;
is(scalar(@missing), 0, "all $acked_count acknowledged puts are on the new primary, handled")
  or diag('missing: ' . join(' ', @missing[ 0 .. ($#missing < 9 ? $#missing : 9) ]));
my @wrong_id = grep { $handled{$_} && $handled{$_}[0] != $acked{$_} } sort keys %acked;
is(scalar(@wrong_id), 0, 'each under the msg_id its put returned');

my ($maybe_there, $maybe_gone, $maybe_torn) = (0, 0, 0);
for my $g (values %maybe_group)
{
	my $n = grep { $handled{$_} } @$g;
	if    ($n == 0)      { $maybe_gone++ }
	elsif ($n == @$g)    { $maybe_there++ }
	else                 { $maybe_torn++ }
}
is($maybe_torn, 0, 'each put cut off by the crash is there whole or not at all (put_batch included)');
note("of the $maybe_count puts cut off by the crash, $maybe_there committed and $maybe_gone did not");
is(scalar(grep { $handled{$_} } keys %never), 0, 'no statement that was never sent left a message');

my %known = (%acked, map { $_ => 1 } map { @$_ } values %maybe_group);
$known{"prepared-$_"} = 1 for qw(to_commit to_roll_back);
my @unknown = grep { !$known{$_} } sort keys %handled;
is(join(' ', @unknown), '', 'no message that no producer sent');
ok($handled{'prepared-to_commit'}, 'the put of the transaction committed after the failover was handled');
ok(!$handled{'prepared-to_roll_back'}, 'the put of the transaction rolled back after it never was');

# The messages at the promotion, queued plus handled, are the messages at
# the end (all handled), with the one committed since.
is($total, $queued_at_promotion + $handled_at_promotion + 1,
	"handled now ($total) = queued ($queued_at_promotion) + handled ($handled_at_promotion) at the promotion + 1 committed since");

# Exactly once: a second handling would have failed on the unique keys.
is( $nps->(q{SELECT coalesce(sum(errors), 0) || '/' || count(*) FILTER (WHERE last_error IS NOT NULL)
	             FROM rmsg.handlers}),
	'0/0', 'rmsg.handlers: the handler never failed (no message handled twice)');
my ($processed, $worker_errors) = split /\|/,
  $nps->(q{SELECT sum(processed) || '|' || sum(errors) FROM rmsg.worker});
is($worker_errors, '0', 'rmsg.worker on the new primary: no errors');
my $by_new = scalar(grep { $_->[1] eq 'f_standby' } values %handled);
my $by_old = scalar(grep { $_->[1] eq 'f_primary' } values %handled);
is($by_new + $by_old, $total, 'every message was handled by the old primary or the new one');
cmp_ok($by_new, '>', 0, "the new primary's worker handled the messages left at the failover ($by_new)");
is($processed, $by_new, "the new worker's processed counter matches the rows it wrote");
note("handled by the old primary (and replicated): $by_old; by the new one: $by_new");

# The worker logged no error on the new primary.
my @worker_errors = grep { /\] recoverable_msg worker .*\b(ERROR|FATAL|PANIC):/ }
  split /\n/, slurp_file($np->logfile, $log_offset);
is(join("\n", @worker_errors), '', "the new primary's log has no ERROR, FATAL or PANIC of the worker");

#---------------------------------------------------------------------------
# 7. The old primary, started again on its own (without its worker, and
# without waiting for a standby), shows what the failover took back: what
# it committed while its WAL sender was frozen.  The worker's transaction
# among it had handled messages whose handling never reached the standby;
# the new primary's worker handled each of those again, and that is the
# one handling that counts.
#---------------------------------------------------------------------------
$primary->append_conf('postgresql.conf', "rmsg.worker_count = 0\nsynchronous_standby_names = ''");
$primary->start;
is($ps->(q{SELECT count(*) FROM handled h JOIN rmsg.message m USING (msg_id)}),
	'0', 'on the old primary too, no message is both handled and queued');
my %old_handled = map { split / /, $_, 2 } split /\n/,
  $ps->(q{SELECT msg_id || ' ' || payload FROM handled});
my @taken_back = grep {
	my $h = $handled{ $old_handled{$_} };
	!($h && $h->[1] eq 'f_primary')
} sort keys %old_handled;
cmp_ok(scalar(@taken_back), '>', 0,
	'the old primary had handled messages whose handling never reached the standby: '
	  . scalar(@taken_back));
my @redone = grep {
	my $h = $handled{ $old_handled{$_} };
	$h && $h->[1] eq 'f_standby' && $h->[0] == $_
} @taken_back;
is(scalar(@redone), scalar(@taken_back),
	'the new primary handled each of them, once, under the same msg_id');
my $maybe_list = join(', ', map { "'$_'" } map { @$_ } values %maybe_group) || "''";
my $maybe_on_old = $ps->(qq{
	SELECT count(*) FROM rmsg.message
	 WHERE convert_from(inline_data, 'UTF8') IN ($maybe_list)});
note("the old primary holds $maybe_on_old of the messages whose puts the crash cut off");
$primary->stop;

$np->stop;
done_testing();
