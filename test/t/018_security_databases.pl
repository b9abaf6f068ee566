use strict;
use warnings FATAL => 'all';

# Shared memory is one for the whole server, but what it holds belongs to
# one database: two databases with the extension must never see, count or
# act on each other's entries, even where their objects have the same
# numbers and names.  Queues made in the same order get the same queue_ids,
# callers and callees and instances can have the same names, so every
# shared key must include the database (and, for what an extension's
# tables number, the OID of that table, so that DROP EXTENSION and CREATE
# EXTENSION start afresh).  Checked here, db1 and db2 side by side:
#  1. the per-queue byte counters (rmsg.queues, rmsg.stat_queues) of queue 1
#     of each database count only that database's puts;
#  2. a get waiting on queue 2 of db1 is not ended by a put to queue 2 of
#     db2 (they share a wake slot: at most a spurious wakeup);
#  3. the shared instance cache: db1's instance 'i1' in recovery does not
#     make deliveries to db2's 'i1' deferred;
#  4. the called-component table: a call in db1 shows only in db1, does
#     not make db2's first call of the same names force the WAL, and each
#     database's calls counter counts its own calls;
#  5. DROP EXTENSION and CREATE EXTENSION in db1: its queue counters start
#     from zero, its instance cache and called components from nothing,
#     db2's are untouched, and
#     in the session that did it a data token handed out before the drop is
#     refused (22023), although it was good just before.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

# No worker: it would only serve 'postgres'.  wal_writer_delay at its
# maximum keeps a lazily committed reply unflushed for the seconds section 4
# needs (as in 006).
my $node = new_node('databases', workers => 0, conf => "wal_writer_delay = '10s'");

sub sql
{
	my ($db, $q) = @_;
	return $node->safe_psql($db, $q);
}

# Opens a background session on $db: RmsgSession connects to 'postgres',
# and \c moves it.
sub open_on
{
	my ($db, $name) = @_;
	my $s = session_open($node, $name);
	session_query($s, "\\c $db", "$name connects to $db");
	return $s;
}

# Each queue's bytes_written as rmsg.queues shows it in $db ('none': no
# counter yet).
sub queue_bytes
{
	my ($db) = @_;
	return sql($db, q{
		SELECT string_agg(queue || ':' || coalesce(bytes_written::text, 'none'), ' ' ORDER BY queue)
		  FROM rmsg.queues});
}

# The rows of rmsg.stat_queues() in $db.
sub stat_queues
{
	my ($db) = @_;
	return sql($db, q{
		SELECT coalesce(string_agg(queue_id || ':' || bytes_written || ':' || bytes_referenced, ' '
		                           ORDER BY queue_id), 'none')
		  FROM rmsg.stat_queues()});
}

# rmsg.called_components in $db: caller>callee:calls per row.
sub components
{
	my ($db) = @_;
	return sql($db, q{
		SELECT coalesce(string_agg(caller || '>' || callee || ':' || calls, ' '
		                           ORDER BY caller, callee), 'none')
		  FROM rmsg.called_components});
}

for my $db (qw(db1 db2))
{
	sql('postgres', "CREATE DATABASE $db");
	sql($db, q{
		CREATE EXTENSION recoverable_msg;
		SELECT rmsg.create_queue('q');
		SELECT rmsg.create_queue('r');
		SELECT rmsg.create_instance('i1');});
	is( sql($db, q{SELECT string_agg(name || '=' || queue_id, ',' ORDER BY queue_id) FROM rmsg.queue}),
		'q=1,r=2', "$db numbers its queues q=1, r=2, as the other does");
}

#---------------------------------------------------------------------------
# 1. Per-queue byte counters: db1 puts 2 x 1000 bytes to its queue 1, db2
#    700 bytes to its queue 1 and 50 to its queue 2.
#---------------------------------------------------------------------------
sql('db1', q{
	SELECT rmsg.put('q', convert_to(repeat('a', 1000), 'UTF8'));
	SELECT rmsg.put('q', convert_to(repeat('b', 1000), 'UTF8'));});
sql('db2', q{
	SELECT rmsg.put('q', convert_to(repeat('c', 700), 'UTF8'));
	SELECT rmsg.put('r', convert_to(repeat('d', 50), 'UTF8'));});

is(queue_bytes('db1'), 'q:2000 r:none', "db1's rmsg.queues counts only db1's bytes");
is(queue_bytes('db2'), 'q:700 r:50', "db2's rmsg.queues counts only db2's bytes");
is(stat_queues('db1'), '1:2000:0', "rmsg.stat_queues() in db1 lists only db1's queue 1");
is(stat_queues('db2'), '1:700:0 2:50:0', "rmsg.stat_queues() in db2 lists only db2's queues");
is(sql('postgres', q{SELECT count(*) FROM pg_extension WHERE extname = 'recoverable_msg'}),
	'0', 'database postgres, without the extension, has no part in this');

#---------------------------------------------------------------------------
# 2. Wakeups: queue 2 of both databases shares a wake slot.  A put to db2's
#    queue 2 may wake db1's waiter, which must find nothing of its own and
#    sleep on; db1's own put then ends the wait with db1's message.
#---------------------------------------------------------------------------
my $w = open_on('db1', 'waiter');
my $n = session_send($w, q{
	SELECT convert_from(payload, 'UTF8') FROM rmsg.get('r', wait => '20 seconds');});
ok( $node->poll_query_until('db1', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE application_name = 'waiter' AND state = 'active'
		   AND wait_event_type IS NOT NULL AND query LIKE '%rmsg.get%'}),
	"db1's get on its queue 2 sleeps");
sql('db2', q{SELECT rmsg.put('r', 'other'::text)});
my ($out, $err) = session_wait($w, $n, 1.5);
ok(!defined $out, "a put to db2's queue 2 does not end db1's wait on its queue 2");
my $t = time;
sql('db1', q{SELECT rmsg.put('r', 'own'::text)});
($out, $err) = session_wait($w, $n, 15);
is(($out // 'timeout') . '|' . ($err // ''), 'own|', "db1's own put ends the wait, with db1's message");
cmp_ok(time - $t, '<', 5, 'at once');
session_kill($w);

#---------------------------------------------------------------------------
# 3. The instance cache: db1's 'i1' goes into recovery and a delivery there
#    caches its mode; deliveries to db2's 'i1' stay ready.
#---------------------------------------------------------------------------
sql('db1', q{SELECT rmsg.begin_recovery('i1')});
is(sql('db1', q{SELECT disposition FROM rmsg.deliver('i1', 'x1')}),
	'deferred', "a delivery to db1's i1, in recovery, is deferred");
is(sql('db2', q{SELECT disposition FROM rmsg.deliver('i1', 'y1')}),
	'ready', "a delivery to db2's i1 of the same name is ready");
is(sql('db1', q{SELECT disposition FROM rmsg.deliver('i1', 'x2')}),
	'deferred', "db1's i1 still defers, from its cached mode");
is(sql('db2', q{SELECT disposition FROM rmsg.deliver('i1', 'y2')}),
	'ready', "db2's i1 still takes deliveries as ready");
is(sql('db2', q{SELECT ready || ':' || deferred FROM rmsg.instances WHERE instance = 'i1'}),
	'2:0', "db2's i1 holds its two messages, ready");

#---------------------------------------------------------------------------
# 4. The called-component table.  The callers are made (restart) before
#    the WAL writer settles: the transaction that makes a caller's row
#    commits flushed.  Then db1's reply stays unflushed for a while, and
#    db2's first call of the same names must not be forced by it: a first
#    call never is.
#---------------------------------------------------------------------------
sql($_, q{SELECT rmsg.restart('orders')}) for qw(db1 db2);
# Wake the WAL writer with a few pages of lazily committed WAL; after that
# it flushes at most every 10 s (see 006).
sql('postgres', q{
	SET synchronous_commit = off;
	CREATE TABLE warm AS SELECT g FROM generate_series(1, 5000) g;
	SELECT pg_sleep(1);});

sql('db1', q{
	SELECT rmsg.record_reply('orders', (rmsg.prepare_call('orders', 'billing')).call_id, 'r1');});
is(components('db1'), 'orders>billing:1', "db1's called_components shows db1's call");
is(components('db2'), 'none', "db2's called_components shows nothing of it");
is(sql('db1', q{SELECT stable FROM rmsg.called_components}),
	'f', "db1's reply is not flushed yet (what the next check needs)");
is(sql('db2', q{SELECT forced FROM rmsg.prepare_call('orders', 'billing')}),
	'f', "db2's first call of the same caller and callee does not force for db1's reply");
sql('db2', q{SELECT rmsg.record_reply('orders', 1, 'r1')});
# The control: db2's own unflushed reply does make its second call force.
is(sql('db2', q{SELECT stable FROM rmsg.called_components}),
	'f', "db2's reply is not flushed yet");
is(sql('db2', q{SELECT forced FROM rmsg.prepare_call('orders', 'billing')}),
	't', "db2's second call forces for db2's own reply");
sql('db2', q{SELECT rmsg.record_reply('orders', 2, 'r2')});
sql('db2', q{
	SELECT rmsg.record_reply('orders', (rmsg.prepare_call('orders', 'billing')).call_id, 'r3');});
is(components('db1'), 'orders>billing:1', "db1 counts its one call");
is(components('db2'), 'orders>billing:3', "db2 counts its three calls");
# A second call in db1, so that db1's old log has call ids 1 and 2 (see 5).
sql('db1', q{
	SELECT rmsg.record_reply('orders', (rmsg.prepare_call('orders', 'billing')).call_id, 'r2');});
is(components('db1'), 'orders>billing:2', "db1 counts its second call");
is(components('db2'), 'orders>billing:3', "db2's count did not move");
is(sql('db1', q{SELECT next_call_id FROM rmsg.callers WHERE caller = 'orders'}),
	'3', "and db1's caller log has two calls");

#---------------------------------------------------------------------------
# 5. DROP EXTENSION and CREATE EXTENSION in db1, in one session that holds
#    a data token from before.
#---------------------------------------------------------------------------
my $s = open_on('db1', 'recreate');
my $token = session_query($s,
	q{SELECT token FROM rmsg.put_with_token('q', convert_to(repeat('t', 3000), 'UTF8'));},
	'put_with_token in db1');
like($token, qr/^-?\d+$/, 'the session was handed a data token');
# The token is good before the drop: the refusal after it is the drop's.
like(session_query($s, "SELECT rmsg.put('r', NULL::bytea, data_token => $token);",
		'put by token before the drop'),
	qr/^\d+$/, 'before the drop, a put by the token is accepted');
is(queue_bytes('db1'), 'q:5000 r:3', "db1's queues counted 2000 + 3000 and 3 bytes written");

session_query($s, 'DROP EXTENSION recoverable_msg;', 'drop in db1');
session_query($s, 'CREATE EXTENSION recoverable_msg;', 'create in db1');
session_query($s, q{SELECT rmsg.create_queue('q'); SELECT rmsg.create_queue('r');},
	'queues again in db1');
is(sql('db1', q{SELECT string_agg(name || '=' || queue_id, ',' ORDER BY queue_id) FROM rmsg.queue}),
	'q=1,r=2', 'the new queues have the old numbers');
is(queue_bytes('db1'), 'q:none r:none', "db1's new queues 1 and 2 have no counters");
is(stat_queues('db1'), 'none', "rmsg.stat_queues() in db1 lists none of the old extension's counters");

($out, $err) = session_wait($s,
	session_send($s, "SELECT rmsg.put('q', NULL::bytea, data_token => $token);"), 60);
like($err // 'timeout', qr/ERROR:  22023: data token -?\d+ is not known/,
	'the same session is refused the token from before the drop (22023)');

is( session_query($s, q{SELECT rmsg.put('q', 'ten bytes!'::text) > 0;}, 'put in the new extension'),
	't', 'the session puts in the new extension');
is(queue_bytes('db1'), 'q:10 r:none', "db1's counters start from zero: 10 bytes");
is(stat_queues('db1'), '1:10:0', 'and rmsg.stat_queues() agrees');
session_kill($s);

is(queue_bytes('db2'), 'q:700 r:55', "db2's counters are untouched");
is(stat_queues('db2'), '1:700:0 2:55:0', "and its rmsg.stat_queues() too");
is(components('db2'), 'orders>billing:3', "db2's called components are untouched");

# The instance cache held db1's old 'i1' in recovery; the new one is normal.
sql('db1', q{SELECT rmsg.create_instance('i1')});
is(sql('db1', q{SELECT disposition FROM rmsg.deliver('i1', 'z')}),
	'ready', "db1's new i1 takes deliveries as ready: the old one's cached mode is gone");

# The called-component table must start afresh as well: the new
# extension's caller 'orders' has made no call, and its replies are not the
# old log's.  The entry of the old log holds call ids 1 and 2, the second
# with a flushed CLSN; the new caller's first call has id 1 again.  Its
# second call must force the WAL for the new, unflushed reply to call 1,
# as db2's second call did; an entry that kept the old ids would find the
# old reply to call 2 first in line, stable, and not force.
is(components('db1'), 'none', "db1's called_components start from nothing after the re-creation");
sql('db1', q{SELECT rmsg.restart('orders')});
sql('db1', q{
	SELECT rmsg.record_reply('orders', (rmsg.prepare_call('orders', 'billing')).call_id, 'new r1');});
is(components('db1'), 'orders>billing:1', "the new caller's first call is counted from zero");
is(sql('db1', q{SELECT stable FROM rmsg.called_components}),
	'f', "the new caller's reply to its call 1 is not flushed yet");
is(sql('db1', q{SELECT forced FROM rmsg.prepare_call('orders', 'billing')}),
	't', "the new caller's second call forces for that reply, as in a fresh database");

$node->stop;
done_testing();
