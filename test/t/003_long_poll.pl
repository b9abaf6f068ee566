use strict;
use warnings FATAL => 'all';

# Long polling: rmsg.get(..., wait => ...) sleeps until a commit makes a
# message of its queue ready, and only then: a rolled-back put does not
# wake it with a message, a rolled-back get hands its message to a waiter, a
# delayed put is returned when its delay ends, and a wait with nothing
# arriving ends empty.  Without the library in shared_preload_libraries the
# extension works, but a get with a wait is refused with a pointer to it.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

# Waits until the session named $name is inside a statement and sleeping
# (a wait event is set): a get with a wait that found nothing.
sub wait_sleeping
{
	my ($node, $name) = @_;
	return $node->poll_query_until(
		'postgres', "
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE application_name = '$name' AND state = 'active'
		   AND wait_event_type IS NOT NULL AND query LIKE '%rmsg.get%'");
}

# Sends a get with a wait on queue lp in session $s; returns the statement.
sub start_waiter
{
	my ($node, $s, $wait) = @_;
	my $n = session_send($s,
		"SELECT convert_from(payload, 'UTF8') || ':' || deliveries
		   FROM rmsg.get('lp', visibility => '1 minute', wait => '$wait');");
	ok(wait_sleeping($node, $s->{name}), "the waiter sleeps ($wait)");
	return $n;
}

# No background worker: its maintenance would collect payloads and
# dead-letter messages on a schedule of its own, where this file checks what
# the SQL functions do by themselves (011 and 012 test the worker).
my $node = new_node('longpoll', workers => 0);
$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION recoverable_msg;
	SELECT rmsg.create_queue('lp');
});

my $w = session_open($node, 'waiter');
my $g = session_open($node, 'getter');
my ($n, $out, $err, $t);

#---------------------------------------------------------------------------
# 1. A committed put wakes the waiter at once.
#---------------------------------------------------------------------------
$n = start_waiter($node, $w, '10 seconds');
$t = time;
$node->safe_psql('postgres', "SELECT rmsg.put('lp', 'p1'::text)");
($out, $err) = session_wait($w, $n, 15);
cmp_ok(time - $t, '<', 3, 'a committed put wakes the waiter well before its wait ends');
is($out, 'p1:1', 'the waiter gets the message put');
is($err, '', 'without error');

#---------------------------------------------------------------------------
# 2. A put that rolls back does not end the wait; a committed one then does.
#---------------------------------------------------------------------------
$n = start_waiter($node, $w, '10 seconds');
$node->safe_psql(
	'postgres', q{
	BEGIN;
	SELECT rmsg.put('lp', 'rolled back'::text);
	ROLLBACK;});
($out) = session_wait($w, $n, 1.5);
ok(!defined $out, 'the waiter still waits 1.5 s after a put rolled back');
ok(wait_sleeping($node, 'waiter'), 'and is asleep again');
$t = time;
$node->safe_psql('postgres', "SELECT rmsg.put('lp', 'p2'::text)");
($out, $err) = session_wait($w, $n, 15);
cmp_ok(time - $t, '<', 3, 'the next committed put wakes it');
is($out, 'p2:1', 'with the committed message, not the rolled-back one');
is($err, '', 'without error');
is( $node->safe_psql(
		'postgres',
		"SELECT ready || ':' || in_flight || ':' || delayed FROM rmsg.queues WHERE queue = 'lp'"),
	'0:2:0',
	'the rolled-back put left nothing: only the two messages taken are there');

#---------------------------------------------------------------------------
# 3. A get that rolls back gives its message back to a waiter.
#---------------------------------------------------------------------------
$node->safe_psql('postgres', "SELECT rmsg.put('lp', 'p3'::text)");
session_query($g, 'BEGIN;', 'getter begins');
is( session_query(
		$g,
		"SELECT convert_from(payload, 'UTF8') FROM rmsg.get('lp', visibility => '1 minute');",
		'getter takes p3'),
	'p3',
	'the other session takes the message in an open transaction');
$n = start_waiter($node, $w, '10 seconds');
($out) = session_wait($w, $n, 0.5);
ok(!defined $out, 'the waiter does not get the message taken by the open transaction');
$t = time;
session_query($g, 'ROLLBACK;', 'getter rolls back');
($out, $err) = session_wait($w, $n, 15);
cmp_ok(time - $t, '<', 3, 'the rollback wakes the waiter');
is($out, 'p3:1', 'which gets the message given back, its first delivery');
is($err, '', 'without error');

#---------------------------------------------------------------------------
# 4. A delayed put committed during the wait is returned when it is due.
#---------------------------------------------------------------------------
$n = start_waiter($node, $w, '10 seconds');
$t = time;
$node->safe_psql('postgres', "SELECT rmsg.put('lp', 'p4'::text, delay => '1 second')");
my $put_done = time;
($out, $err) = session_wait($w, $n, 15);
my $returned = time;
is($out, 'p4:1', 'the delayed message is returned');
is($err, '', 'without error');
cmp_ok($returned - $t, '>=', 1, 'not before its delay has passed');
cmp_ok($returned - $put_done, '<', 3, 'about when its delay ends, not at the end of the wait');

#---------------------------------------------------------------------------
# 5. Nothing arrives: the get returns empty after its wait.
#---------------------------------------------------------------------------
is( $node->safe_psql(
		'postgres', "
	SELECT rmsg.ack(ARRAY(SELECT msg_id FROM rmsg.message));
	SELECT count(*) FROM rmsg.message"),
	"4\n0",
	'the queue is emptied');
$t = time;
is($node->safe_psql('postgres', "SELECT count(*) FROM rmsg.get('lp', wait => '1 second')"),
	'0', 'a wait with nothing arriving returns no message');
my $elapsed = time - $t;
cmp_ok($elapsed, '>=', 1, 'after waiting the full second');
cmp_ok($elapsed, '<', 3, 'and not much longer');

#---------------------------------------------------------------------------
# 5b. A nack, and an extend to a lease of zero, give a message back at once:
#     both wake the waiter.
#---------------------------------------------------------------------------
for my $how ('nack', 'extend')
{
	$node->safe_psql('postgres', "SELECT rmsg.put('lp', '$how'::text)");
	my $id = $node->safe_psql('postgres',
		"SELECT msg_id FROM rmsg.get('lp', visibility => '1 minute')");
	$n = start_waiter($node, $w, '10 seconds');
	$t = time;
	$node->safe_psql('postgres',
		$how eq 'nack' ? "SELECT rmsg.nack($id)" : "SELECT rmsg.extend($id, '0 seconds')");
	($out, $err) = session_wait($w, $n, 15);
	cmp_ok(time - $t, '<', 3, "a committed $how wakes the waiter well before its wait ends");
	is($out, "$how:2", "which gets the message given back, its second delivery");
}

session_kill($w);
session_kill($g);
$node->stop;

#---------------------------------------------------------------------------
# 6. Not preloaded: the queue works, a get with a wait is refused.
#---------------------------------------------------------------------------
my $plain = PostgreSQL::Test::Cluster->new('not_preloaded');
$plain->init;
$plain->start;
is($plain->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'', 'the second node does not preload the library');
$plain->safe_psql(
	'postgres', q{
	CREATE EXTENSION recoverable_msg;
	SELECT rmsg.create_queue('nq');});
my $id = $plain->safe_psql('postgres', "SELECT rmsg.put('nq', 'plain'::text)");
is( $plain->safe_psql(
		'postgres',
		"SELECT msg_id || ':' || convert_from(payload, 'UTF8') FROM rmsg.get('nq')"),
	"$id:plain",
	'put and get work without preloading');
is($plain->safe_psql('postgres', "SELECT rmsg.ack($id)"), 't', 'and ack');

my ($stdout, $stderr);
$t = time;
my $rc = $plain->psql(
	'postgres',
	"\\set VERBOSITY verbose\nSELECT * FROM rmsg.get('nq', wait => '1 second');",
	stdout => \$stdout,
	stderr => \$stderr);
isnt($rc, 0, 'a get with a wait fails without preloading');
like($stderr, qr/ERROR:  55000:/, 'with SQLSTATE 55000');
like($stderr, qr/HINT:  .*shared_preload_libraries/, 'and a hint naming shared_preload_libraries');
$plain->stop;

done_testing();
