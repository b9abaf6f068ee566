use strict;
use warnings FATAL => 'all';

# What an application does through a real PgBouncer, in transaction and in
# session pooling, and what a long poll does there.
#
# In transaction pooling a client has a server connection only for the
# length of one transaction, and the next transaction may run on another.
# Everything the extension keeps between transactions lives in tables or
# shared memory, not in the backend, so puts, gets, acks by receipt, nacks,
# extends and the contract's calls work unchanged: sections 1 and 2 run
# them with every statement its own transaction.
#
# A get with a wait is one transaction that sleeps: it holds its server
# connection the whole time.  Section 3 shows the trouble this makes: with
# as many waiters as the pool has connections, a producer's put cannot get
# a connection until a wait runs out, so the message that would wake the
# waiters waits for them instead.  The extension's answer is the setting
# rmsg.max_wait, a ceiling the operator sets for the roles that come
# through such a pool (ALTER ROLE ... SET; a role cannot lift it itself,
# section 4): their gets give their connection back after at most that
# long, however long they asked to wait, and poll again.  Section 5 shows
# the other answer, for consumers that want true long polls: a pool in
# session mode of their own, where a waiting get only holds its own
# client's connection and wakes as soon as the put commits.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;
use RmsgPooler;

plan skip_all => 'PgBouncer is not installed (' . pgbouncer_binary() . ', Debian package pgbouncer)'
  unless -x pgbouncer_binary();

use constant POOL_SIZE => 2;
use constant CEILING_MS => 300;

my $t0 = time;

my $node = new_node('pooled', workers => 0, extension => 1);
$node->safe_psql(
	'postgres', qq{
	CREATE ROLE app LOGIN;
	CREATE ROLE pooled_consumer LOGIN;
	GRANT USAGE ON SCHEMA rmsg TO app, pooled_consumer;
	ALTER ROLE pooled_consumer SET rmsg.max_wait = '${\ CEILING_MS }ms';
	SELECT rmsg.create_queue(q) FROM unnest(ARRAY['jobs', 'waits', 'capped', 'session']) q;
	SELECT rmsg.grant_queue(q, 'app', 'all')
	  FROM unnest(ARRAY['jobs', 'waits', 'capped', 'session']) q;
	SELECT rmsg.grant_queue('capped', 'pooled_consumer', 'put, get');
});

# Two aliases of one database: 'tx' pools by transaction with two server
# connections per user, 'sess' pools by session (a consumer keeps its
# server connection while it is connected).
my $pooler = start_pgbouncer(
	$node,
	databases => {
		tx => 'pool_mode=transaction pool_size=' . POOL_SIZE,
		sess => 'pool_mode=session pool_size=8',
	},
	users => [ 'app', 'pooled_consumer' ]);
my $tx = $pooler->{connstr}->('tx', 'app');
my $sess = $pooler->{connstr}->('sess', 'app');

# One statement (one transaction, in autocommit) through a connection
# string; returns psql's output, or dies with its error.
sub pooled
{
	my ($connstr, $sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $connstr, '-c', $sql ],
		'<', \undef, '>', \$out, '2>', \$err)
	  or die "pooled statement failed: $sql\n$err";
	chomp $out;
	return $out;
}

#---------------------------------------------------------------------------
# 1. The queue, a statement per transaction through the transaction pool.
#    One client (a psql session, whose transactions PgBouncer may hand to
#    either server connection) puts, takes, extends, nacks and acks by
#    receipt, each step its own transaction.
#---------------------------------------------------------------------------
my $client = session_open($node, 'tx_client', $tx);
my $out = session_query(
	$client, q{
SELECT rmsg.put('jobs', 'one'::text) AS m1 \gset
SELECT count(*) FROM rmsg.put_batch('jobs', ARRAY['two', 'three']::bytea[]);
SELECT msg_id AS got_id, receipt AS got_receipt, convert_from(payload, 'UTF8') AS got_text
  FROM rmsg.get('jobs', 1, '1 minute') \gset
SELECT 'got', :got_id = :m1, :'got_text';
SELECT 'extended', rmsg.extend(:got_id, '2 minutes', :got_receipt);
SELECT 'nacked', rmsg.nack(:got_id, receipt => :got_receipt);
SELECT msg_id AS again_id, receipt AS again_receipt FROM rmsg.get('jobs', 1, '1 minute') \gset
SELECT 'stale receipt', rmsg.ack(:again_id, :got_receipt);
SELECT 'acked', :again_id = :m1, rmsg.ack(:again_id, :again_receipt);
SELECT 'rest', string_agg(convert_from(payload, 'UTF8'), ',' ORDER BY msg_id),
       bool_and(rmsg.ack(msg_id)) FROM rmsg.get('jobs', 10, '1 minute');
SELECT 'left', ready + in_flight + delayed FROM rmsg.queues WHERE queue = 'jobs';
SELECT 'backends', count(DISTINCT pid) FROM pg_stat_activity WHERE usename = 'app';
}, 'queue steps through the transaction pool');
my %step = map { my ($k, @v) = split /\|/, $_, -1; ($k => join('|', @v)) } split /\n/, $out;
is($step{got}, 't|one', '1: a get in a transaction of its own takes the first message');
is($step{extended}, 't', '1: extend by receipt in a later transaction');
is($step{nacked}, 't', '1: nack by receipt in a later transaction');
is($step{'stale receipt'}, 'f', '1: the receipt of a lease given back no longer acks');
is($step{acked}, 't|t', '1: the new lease\'s receipt acks the message');
is($step{rest}, 'two,three|t', '1: put_batch\'s messages are taken and acked');
is($step{left}, '0', '1: the queue is empty');
cmp_ok($step{backends}, '<=', POOL_SIZE, '1: the client ran on the pool\'s server connections');

#---------------------------------------------------------------------------
# 2. The contract through the transaction pool: the caller's log and the
#    callee's stored replies are tables and shared memory, so a call whose
#    prepare, accept, reply and record run in four transactions (perhaps
#    on two backends) is answered once, and a call delivered again gets the
#    stored reply without being worked again.
#---------------------------------------------------------------------------
$out = session_query(
	$client, q{
SELECT call_id AS cid FROM rmsg.prepare_call('shop', 'store', 'order 1'::bytea) \gset
SELECT 'first', status, convert_from(coalesce(reply, ''), 'UTF8')
  FROM rmsg.accept_call('store', 'shop', :cid, 'order 1'::bytea);
SELECT 'reply', 'done' FROM (SELECT rmsg.reply('store', 'shop', :cid, 'reserved'::bytea)) r;
SELECT 'again', status, convert_from(reply, 'UTF8')
  FROM rmsg.accept_call('store', 'shop', :cid, 'order 1'::bytea);
SELECT 'record', 'done' FROM (SELECT rmsg.record_reply('shop', :cid, 'reserved'::bytea)) r;
SELECT 'replay', count(*), string_agg(convert_from(reply, 'UTF8'), ',') FROM rmsg.replay('shop');
}, 'contract steps through the transaction pool');
%step = map { my ($k, @v) = split /\|/, $_, -1; ($k => join('|', @v)) } split /\n/, $out;
is($step{first}, 'new|', '2: a call accepted through the pool is new');
is($step{again}, 'duplicate|reserved', '2: delivered again, it gets the stored reply');
is($step{record}, 'done', '2: the caller records the reply in a later transaction');
is($step{replay}, '1|reserved', '2: the caller\'s log holds the call and its reply');
session_kill($client);

#---------------------------------------------------------------------------
# 3. The trouble: as many waiting gets as the pool has connections.  Each
#    asks to wait 4 s.  A producer's put through the same pool queues in
#    PgBouncer until a wait ends, although the message it brings would have
#    ended the waits at once.
#---------------------------------------------------------------------------
use constant LONG_WAIT => 4;

sub start_waiters
{
	my ($connstr, $queue, $wait, $count) = @_;
	my @waiters;
	for my $i (1 .. $count)
	{
		my $s = session_open($node, "waiter$i", $connstr);
		push @waiters, [ $s, session_send($s,
			"SELECT count(*) FROM rmsg.get('$queue', 1, '1 minute', wait => '$wait seconds');") ];
	}
	# Until every waiter sleeps in its get.
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = $count FROM pg_stat_activity
		 WHERE query LIKE '%rmsg.get(''$queue''%' AND state = 'active'})
	  or die "the waiters did not start";
	return @waiters;
}

# Seconds a put through $connstr takes, from sending it to its commit.
sub timed_put
{
	my ($connstr, $queue) = @_;
	my $start = time;
	pooled($connstr, "SELECT rmsg.put('$queue', 'wake up'::text)");
	return time - $start;
}

my @waiters = start_waiters($tx, 'waits', LONG_WAIT, POOL_SIZE);
my $stalled = timed_put($tx, 'waits');
note(sprintf('3: put behind %d waiting gets took %.2f s', POOL_SIZE, $stalled));
cmp_ok($stalled, '>=', LONG_WAIT - 1,
	'3: without a ceiling the put waits for a waiting get to give its connection back');
session_wait($_->[0], $_->[1], 30) for @waiters;
session_kill($_->[0]) for @waiters;

#---------------------------------------------------------------------------
# 4. rmsg.max_wait for the pooled consumers' role: the same waiters, now
#    asking for a whole minute, loop on gets that end after CEILING_MS
#    each; the producer's put finds a free connection within a ceiling or
#    so, and a waiter takes its message.  The role cannot lift the ceiling.
#---------------------------------------------------------------------------
my $consumer = $pooler->{connstr}->('tx', 'pooled_consumer');
is(pooled($consumer, 'SHOW rmsg.max_wait'), CEILING_MS . 'ms',
	'4: the pooled consumer\'s connections carry the ceiling');
my $denied = session_open($node, 'lifter', $consumer);
is(session_sqlstate($denied, 'SET rmsg.max_wait = 0;'), '42501',
	'4: the consumer cannot lift the ceiling');
session_kill($denied);

my $poll_start = time;
is(pooled($consumer, "SELECT count(*) FROM rmsg.get('capped', 1, '1 minute', wait => '1 minute')"),
	'0', '4: an empty get asking for a minute returns empty');
my $one_poll = time - $poll_start;
note(sprintf('4: it returned after %.2f s', $one_poll));
cmp_ok($one_poll, '<', 30, '4: ... long before its minute');

# The consumers' loops run here: each looper sends one get at a time (one
# transaction through the pool), and a new one as soon as the last came
# back empty, until one of them takes a message.  The producer's put is
# sent once the loopers are polling, and timed from there to its commit.
my @loopers = map { { s => session_open($node, "looper$_", $consumer) } } 1 .. POOL_SIZE;
my $poll_sql = q{SELECT count(*) FROM rmsg.get('capped', 1, '1 minute', wait => '1 minute');};
$_->{n} = session_send($_->{s}, $poll_sql) for @loopers;
$node->poll_query_until('postgres', qq{
	SELECT count(*) = ${\ POOL_SIZE } FROM pg_stat_activity
	 WHERE usename = 'pooled_consumer' AND state = 'active'})
  or die 'the loopers did not start';
# PgBouncer keeps a pool per database and user: the producer is the same
# role as the consumers, so that its put must find a connection in their
# pool, as in a service that both puts and gets.
my $producer = session_open($node, 'producer', $consumer);
my $put_sent = time;
my $put_n = session_send($producer, q{SELECT rmsg.put('capped', 'wake up'::text) IS NOT NULL;});
my ($capped, $taken_by, $polls) = (undef, undef, 0);
my $deadline = time + 60;
while ((!defined $capped || !defined $taken_by) && time < $deadline)
{
	if (!defined $capped)
	{
		my ($o) = session_wait($producer, $put_n, 0.01);
		$capped = time - $put_sent if defined $o;
	}
	for my $i (0 .. $#loopers)
	{
		next if defined $taken_by;
		my $l = $loopers[$i];
		my ($o) = session_wait($l->{s}, $l->{n}, 0.01);
		next unless defined $o;
		$polls++;
		if ($o =~ /^[1-9]/) { $taken_by = $i; }
		else { $l->{n} = session_send($l->{s}, $poll_sql); }
	}
}
ok(defined $capped, '4: the put through the pool committed');
note(sprintf('4: put behind %d capped pollers took %.2f s; they polled %d times',
	POOL_SIZE, $capped // -1, $polls));
cmp_ok($capped // 99, '<', LONG_WAIT - 1,
	'4: with the ceiling the put gets a connection without waiting out a long poll');
ok(defined $taken_by, '4: a polling consumer took the message');
session_kill($_->{s}) for @loopers;
session_kill($producer);

#---------------------------------------------------------------------------
# 5. The session pool for consumers: waiters there hold only their own
#    clients' connections, a producer's put through the transaction pool
#    goes through at once, and the waiters wake as soon as it commits.
#---------------------------------------------------------------------------
my @session_waiters = start_waiters($sess, 'session', 30, POOL_SIZE + 1);
my $free = timed_put($tx, 'session');
note(sprintf('5: put with %d session-pooled waiters took %.2f s', POOL_SIZE + 1, $free));
cmp_ok($free, '<', LONG_WAIT - 1, '5: the put does not wait for session-pooled waiters');
my $woken_at = time;
my ($taken, $woke) = (0, undef);
my %finished;
while (!defined $woke && time < $woken_at + 40)
{
	for my $i (0 .. $#session_waiters)
	{
		next if $finished{$i};
		my ($o) = session_wait($session_waiters[$i][0], $session_waiters[$i][1], 0.01);
		next unless defined $o;
		$finished{$i} = 1;
		if ($o =~ /^[1-9]/)
		{
			$taken = $o;
			$woke = time - $woken_at;
		}
	}
}
is($taken, 1, '5: a session-pooled waiter takes the message');
note(sprintf('5: a waiter woke %.2f s after the commit', $woke // -1));
cmp_ok($woke // 99, '<', 20, '5: ... without waiting out its 30 s');
session_kill($_->[0]) for @session_waiters;

#---------------------------------------------------------------------------
# 6. psycopg 3 through the transaction pool.  psycopg prepares a statement
#    it has run a few times (prepare_threshold, 5 by default), and the
#    prepared statement stays on the backend that prepared it: through
#    PgBouncer 1.18 in transaction mode the next transaction may run on
#    another backend, which does not know it.  With prepare_threshold=None
#    psycopg prepares nothing, and every step works.  The default is run
#    too, and what it did is only noted: that is PgBouncer's behaviour.
#---------------------------------------------------------------------------
my $python = '/usr/bin/python3';
SKIP:
{
	skip 'psycopg 3 is not installed (Debian package python3-psycopg)', 2
	  unless system($python, '-c', 'import psycopg') == 0;
	my $script = <<'PY';
import sys, psycopg
conninfo, threshold = sys.argv[1], sys.argv[2]
kwargs = {} if threshold == 'default' else {'prepare_threshold': None}
done = 0
with psycopg.connect(conninfo, autocommit=True, **kwargs) as a, \
     psycopg.connect(conninfo, autocommit=True, **kwargs) as b:
    for i in range(40):
        a.execute("SELECT rmsg.put('jobs', %s::text)", (f'py {i}',))
        with b.transaction():
            for msg_id, receipt in b.execute(
                    "SELECT msg_id, receipt FROM rmsg.get('jobs', 1, '1 minute')").fetchall():
                b.execute("SELECT rmsg.ack(%s, %s)", (msg_id, receipt))
                done += 1
print(done)
PY
	my ($o, $e) = ('', '');
	IPC::Run::run([ $python, '-c', $script, $tx, 'none' ], '<', \undef, '>', \$o, '2>', \$e);
	chomp $o;
	is($o, '40', '6: psycopg with prepare_threshold=None puts, gets and acks through the pool')
	  or diag($e);
	is(pooled($tx, "SELECT ready + in_flight FROM rmsg.queues WHERE queue = 'jobs'"), '0',
		'6: and leaves nothing behind');
	($o, $e) = ('', '');
	IPC::Run::run([ $python, '-c', $script, $tx, 'default' ], '<', \undef, '>', \$o, '2>', \$e);
	my ($last_line) = $e =~ /([^\n]+)\n*\z/;
	note('6: with psycopg\'s default prepare_threshold: '
		  . ($e eq '' ? "no error ($o)" : $last_line // $e));
}

stop_pgbouncer($pooler);
$node->stop;
note(sprintf('runtime %.1f s', time - $t0));
done_testing();
