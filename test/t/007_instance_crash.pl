use strict;
use warnings FATAL => 'all';

# Recovery-mode instances across real crashes (immediate shutdown, no
# checkpoint at the end).  Exactly what committed survives: the mode, the
# saved state and every message not acked; acked messages never come back,
# a received message that was not acked does, and its deliveries count the
# lease when the lease reached the disk (a lease commits lazily, so a crash
# may forget the last one).
#  1. crash 1, with
#     A  in recovery: deferred normal messages between recovery messages,
#        two of these received and acked, one received (lease flushed by a
#        later durable commit) and not acked, the state saved twice, and an
#        uncommitted save_state and deliver at the crash;
#     B  in recovery: its recovery message leased by the last transaction
#        before the crash (lazily committed: kept or forgotten);
#     U  in recovery, its complete_recovery uncommitted at the crash;
#     V  in normal mode, its begin_recovery uncommitted at the crash;
#     E  in recovery, its complete_recovery the last durable commit;
#     C, D in recovery with deferred messages (used by crash 2);
#     M1..M4 normal with three messages each, M5 in recovery with two
#        deferred (used by receive_any at the end).
#  2. crash 2, during the release: C's complete_recovery committed, its
#     first three released messages received and acked, the third one's ack
#     the last durable commit before the crash, right after D's
#     complete_recovery; C's fourth message leased (lazily) by the last
#     transaction.
#  3. receive_any after the restarts: one message per instance, never an
#     instance another open transaction is receiving, never a recovering
#     instance's normal messages; each instance's messages in order.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

#---------------------------------------------------------------------------
# The node: durable commits explicitly, and a WAL writer so slow that a
# lazily committed lease is most likely still in memory at the crash.
#---------------------------------------------------------------------------

# workers => 1: the server's default, which this file was written against
# (it calls no handler).
my $node = new_node(
	'inst_crash',
	workers => 1,
	conf    => q{
synchronous_commit = on
wal_writer_delay = '10s'
autovacuum = off
# The WAL writer also wakes when an asynchronous commit crosses a WAL page
# boundary; the full-page images written after the checkpoint below would
# almost always make the last transactions before the crash cross one, and
# get flushed.  Without them a lazy commit at the end is most likely still
# unflushed at the crash.
# (An immediate shutdown tears no page: the files stay in the OS cache.)
full_page_writes = off
});

$node->safe_psql('postgres', q{
	CREATE EXTENSION recoverable_msg;
	CREATE TABLE durable_mark (at timestamptz DEFAULT clock_timestamp());
});

#---------------------------------------------------------------------------
# Helpers.  A message's payload is its name; %id maps names to the msg_ids
# deliver returned.  A received message is described as
# "name:kind:deliveries", followed by ":wrong id <id>" when its msg_id is not
# the one deliver returned for that name.
#---------------------------------------------------------------------------

my %id;
my @all_ids;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Delivers [name, kind] items to an instance, each in its own transaction;
# returns the dispositions, comma-separated.
sub deliver_seq
{
	my ($inst, @items) = @_;
	my $q = join("\n",
		map { "SELECT msg_id, disposition FROM rmsg.deliver('$inst', convert_to('$_->[0]', 'UTF8'), '$_->[1]');" }
		  @items);
	my @rows = split /\n/, sql($q);
	die "deliver to $inst: " . scalar(@rows) . ' rows for ' . scalar(@items) . ' items'
	  unless @rows == @items;
	my @disp;
	for my $i (0 .. $#items)
	{
		my ($mid, $d) = split /\|/, $rows[$i];
		$id{ $items[$i][0] } = $mid;
		push @all_ids, $mid;
		push @disp, $d;
	}
	return join(',', @disp);
}

sub normal   { return map { [ $_, 'normal' ] } @_; }
sub recovery { return map { [ $_, 'recovery' ] } @_; }

sub describe
{
	my ($mid, $kind, $name, $deliveries) = @_;
	my $d = "$name:$kind:$deliveries";
	$d .= ":wrong id $mid" unless defined $id{$name} && $id{$name} == $mid;
	return $d;
}

# rmsg.receive in a transaction of its own: [msg_id, kind, name, deliveries] rows.
sub receive_rows
{
	my ($inst, $max, $vis) = @_;
	my $out = sql("SELECT msg_id, kind, convert_from(payload, 'UTF8'), deliveries
	                 FROM rmsg.receive('$inst', $max, '$vis')");
	return map { [ split /\|/, $_, -1 ] } grep { $_ ne '' } split /\n/, $out;
}

sub ack
{
	my ($mid) = @_;
	return sql("SELECT rmsg.ack($mid)");
}

# Receives one message (max 1) and acks it; returns its description, with
# ":ack <result>" appended unless the ack returned true, or '' when the
# receive returned nothing.
sub receive_ack
{
	my ($inst) = @_;
	my @r = receive_rows($inst, 1, '1 minute');
	return '' unless @r;
	die "receive('$inst', 1) returned " . scalar(@r) . ' rows' if @r > 1;
	my $d = describe(@{ $r[0] });
	my $a = ack($r[0][0]);
	$d .= ":ack $a" unless $a eq 't';
	return $d;
}

# Receives and acks one message at a time until receive returns nothing;
# returns the descriptions in the order received.
sub drain
{
	my ($inst) = @_;
	my @got;
	while (1)
	{
		my $d = receive_ack($inst);
		last if $d eq '';
		push @got, $d;
		die "drain of $inst does not end" if @got > 1000;
	}
	return join(' ', @got);
}

# Polls receive (max 1) until it returns a message or $timeout seconds
# pass; returns ([msg_id, kind, name, deliveries] or undef, time received).
sub wait_receive
{
	my ($inst, $vis, $timeout) = @_;
	my $deadline = time + $timeout;
	while (1)
	{
		my @r = receive_rows($inst, 1, $vis);
		return ($r[0], time) if @r;
		return (undef, time) if time > $deadline;
		usleep(100_000);
	}
}

# mode/ready/deferred/in_flight from rmsg.instances
sub view_of
{
	my ($inst) = @_;
	return sql("SELECT mode || '/' || ready || '/' || deferred || '/' || in_flight
	              FROM rmsg.instances WHERE instance = '$inst'");
}

# mode/deferred/(ready + in_flight): what holds whether a lease is running
sub view_sum_of
{
	my ($inst) = @_;
	return sql("SELECT mode || '/' || deferred || '/' || (ready + in_flight)
	              FROM rmsg.instances WHERE instance = '$inst'");
}

sub state_of { return sql("SELECT rmsg.load_state('$_[0]')"); }

sub names_described
{
	my ($kind, @names) = @_;
	return join(' ', map { "$_:$kind:1" } @names);
}

sub crash_and_restart
{
	my (@sessions) = @_;
	my $offset = -s $node->logfile;
	$node->stop('immediate');
	session_kill($_) for @sessions;
	$node->start;
	return $node->log_contains(qr/not properly shut down; automatic recovery in progress/, $offset);
}

#---------------------------------------------------------------------------
# 1. Before crash 1
#---------------------------------------------------------------------------

sql(q{
	SELECT rmsg.create_instance('inst_a', '{"step": 0}');
	SELECT rmsg.create_instance('inst_b');
	SELECT rmsg.create_instance('inst_c', '{"phase": "created"}');
	SELECT rmsg.create_instance('inst_d');
	SELECT rmsg.create_instance('inst_e');
	SELECT rmsg.create_instance('inst_u', '{"u": "before"}');
	SELECT rmsg.create_instance('inst_v');
	SELECT rmsg.create_instance('inst_m' || i) FROM generate_series(1, 5) i;
});

#--- A: deferred normal messages between recovery messages ------------------
sql(q{SELECT rmsg.begin_recovery('inst_a')});
sql(q{SELECT rmsg.save_state('inst_a', '{"step": 1}')});
is( deliver_seq('inst_a', normal('a_n1'), recovery('a_r1'), normal('a_n2'), recovery('a_r2'),
		normal('a_n3'), recovery('a_r3'), normal('a_n4'), recovery('a_r4'), normal('a_n5')),
	'deferred,ready,deferred,ready,deferred,ready,deferred,ready,deferred',
	'A in recovery: normal messages deferred, recovery messages ready');
is(receive_ack('inst_a'), 'a_r1:recovery:1', 'A: the first recovery message received and acked');
is(receive_ack('inst_a'), 'a_r2:recovery:1', 'A: the second recovery message received and acked');
sql(q{SELECT rmsg.save_state('inst_a', '{"step": 2}')});
is(view_of('inst_a'), 'recovery/2/5/0', 'A before the crash: 2 recovery messages ready, 5 deferred');

#--- B: a recovery message (leased last, below) and a deferred one ----------
sql(q{SELECT rmsg.begin_recovery('inst_b')});
is(deliver_seq('inst_b', recovery('b_r1'), normal('b_n1')),
	'ready,deferred', 'B: a recovery message ready, a normal one deferred');

#--- C: a recovery message acked, eight deferred ---------------------------
sql(q{SELECT rmsg.begin_recovery('inst_c')});
is( deliver_seq('inst_c', recovery('c_r1'), normal(map { "c$_" } 1 .. 8)),
	join(',', 'ready', ('deferred') x 8),
	'C: a recovery message, then eight deferred');
is(receive_ack('inst_c'), 'c_r1:recovery:1', 'C: its recovery message received and acked');

#--- D: six deferred, then a recovery message acked -------------------------
sql(q{SELECT rmsg.begin_recovery('inst_d')});
is( deliver_seq('inst_d', normal(map { "d$_" } 1 .. 6), recovery('d_r1')),
	join(',', ('deferred') x 6, 'ready'),
	'D: six deferred, then a recovery message');
is(receive_ack('inst_d'), 'd_r1:recovery:1',
	'D: its recovery message, last in line, is received before the deferred ones');

#--- E: two deferred (completed right before the crash, below) -------------
sql(q{SELECT rmsg.begin_recovery('inst_e')});
is(deliver_seq('inst_e', normal('e1', 'e2')), 'deferred,deferred', 'E: two deferred');

#--- U: four deferred (its complete_recovery stays uncommitted) -------------
sql(q{SELECT rmsg.begin_recovery('inst_u')});
is(deliver_seq('inst_u', normal(map { "u$_" } 1 .. 4)),
	'deferred,deferred,deferred,deferred', 'U: four deferred');

#--- V: normal mode, two ready (its begin_recovery stays uncommitted) ------
is(deliver_seq('inst_v', normal('v1', 'v2')), 'ready,ready', 'V in normal mode: two ready');

#--- M1..M4: three messages each; M5 in recovery, two deferred -------------
my @m_disp;
for my $m (1 .. 4)
{
	push @m_disp, deliver_seq("inst_m$m", normal(map { "m${m}_$_" } 1 .. 3));
}
is(join(',', @m_disp), join(',', ('ready') x 12), 'M1..M4: three ready messages each');
sql(q{SELECT rmsg.begin_recovery('inst_m5')});
is(deliver_seq('inst_m5', normal('m5_1', 'm5_2')), 'deferred,deferred', 'M5 in recovery: two deferred');

#--- A: its third recovery message received, not acked; the lease is flushed
# by the durable commits that follow
my $a_vis = 8;
my $a_lease_start = time;
my @r = receive_rows('inst_a', 1, "$a_vis seconds");
is(join(' ', map { describe(@$_) } @r), 'a_r3:recovery:1',
	'A: the third recovery message received (not to be acked)');
my $a_lease_end = $a_lease_start + $a_vis;
sql('INSERT INTO durable_mark DEFAULT VALUES');

#--- uncommitted work at the crash ------------------------------------------
my $su = session_open($node, 'uncommitted_complete');
my $sv = session_open($node, 'uncommitted_begin');
my $sa = session_open($node, 'uncommitted_state');

session_query($su, 'BEGIN;', 'U: begin');
is(session_query($su, q{SELECT rmsg.complete_recovery('inst_u', '{"u": "completed"}');}, 'U: complete_recovery'),
	'4', 'U: the uncommitted complete_recovery releases four');
like(session_query($su, q{SELECT msg_id || ':' || disposition FROM rmsg.deliver('inst_u', convert_to('u_late', 'UTF8'));},
		'U: deliver after completing'),
	qr/^\d+:ready$/, 'U: a normal message delivered in the same transaction is ready');

session_query($sv, 'BEGIN;', 'V: begin');
session_query($sv, q{SELECT rmsg.begin_recovery('inst_v');}, 'V: begin_recovery');
like(session_query($sv, q{SELECT msg_id || ':' || disposition FROM rmsg.deliver('inst_v', convert_to('v_late', 'UTF8'));},
		'V: deliver in recovery'),
	qr/^\d+:deferred$/, 'V: a normal message delivered after the uncommitted begin_recovery is deferred');

session_query($sa, 'BEGIN;', 'A: begin');
session_query($sa, q{SELECT rmsg.save_state('inst_a', '{"step": 99}');}, 'A: uncommitted save_state');
like(session_query($sa, q{SELECT msg_id || ':' || disposition FROM rmsg.deliver('inst_a', convert_to('a_late', 'UTF8'));},
		'A: uncommitted deliver'),
	qr/^\d+:deferred$/, 'A: an uncommitted normal message is deferred');

# The checkpoint writes pages holding the uncommitted changes: recovery has
# to leave them out because their transactions never committed.
sql('CHECKPOINT');
sql('INSERT INTO durable_mark DEFAULT VALUES');

# The last durable commit before the crash: no later one flushes it.
is(sql(q{SELECT rmsg.complete_recovery('inst_e', '{"e": "completed"}')}), '2',
	'E: complete_recovery releases two, the last durable commit before crash 1');

#--- the last transaction before the crash only leases ----------------------
my $b_vis = 3;
my $b_lease_start = time;
@r = receive_rows('inst_b', 1, "$b_vis seconds");
is(join(' ', map { describe(@$_) } @r), 'b_r1:recovery:1',
	'B: its recovery message leased by the last transaction before the crash');
my $b_lease_end = time + $b_vis;

#---------------------------------------------------------------------------
# Crash 1
#---------------------------------------------------------------------------

ok(crash_and_restart($su, $sv, $sa), 'crash 1: the server went through crash recovery');

#--- A ----------------------------------------------------------------------
is(view_sum_of('inst_a'), 'recovery/5/2',
	'A after the crash: in recovery, its five deferred messages and two recovery messages are there');
is(state_of('inst_a'), '{"step": 2}', 'A: the state is the last committed one');
if (time < $a_lease_end - 1)
{
	is(view_of('inst_a'), 'recovery/1/5/1', 'A: the flushed lease of a_r3 survived: it is in flight');
	is(scalar(receive_rows('inst_a', 1, '1 minute')), 0,
		'A: nothing is received while the lease of a_r3 runs');
}
else
{
	note('A: restarted too late to see the lease of a_r3 running');
}
my ($got, $got_at) = wait_receive('inst_a', '1 minute', $a_vis + 15);
is($got ? describe(@$got) : 'nothing', 'a_r3:recovery:2',
	'A: the received, unacked a_r3 comes back; deliveries counts the flushed lease');
cmp_ok($got_at, '>=', $a_lease_end - 0.2, 'A: a_r3 comes back only once its lease ended');
is($got ? ack($got->[0]) : 'no message', 't', 'A: a_r3 acked');
is(drain('inst_a'), 'a_r4:recovery:1',
	'A: then a_r4 alone: the acked a_r1 and a_r2 never come back, the normal ones stay deferred');
is(view_of('inst_a'), 'recovery/0/5/0', 'A: five deferred, nothing else');
is(sql(q{SELECT rmsg.complete_recovery('inst_a', '{"step": 3}')}), '5',
	'A: complete_recovery releases the five deferred messages');
is(drain('inst_a'), names_described('normal', map { "a_n$_" } 1 .. 5),
	'A: the five deferred messages come once each, in arrival order, with their msg_ids (the uncommitted one is gone)');
is(view_of('inst_a') . ' ' . state_of('inst_a'), 'normal/0/0/0 {"step": 3}', 'A: empty, normal, state saved');

#--- B: the lazy lease, kept or forgotten -----------------------------------
is(view_sum_of('inst_b'), 'recovery/1/1', 'B: in recovery, one deferred, one recovery message');
my $b_wait_start = time;
($got, $got_at) = wait_receive('inst_b', '1 minute', $b_vis + 15);
my $b_desc = $got ? describe(@$got) : 'nothing';
note($b_desc =~ /:1$/
	? 'B: the lazily committed lease was forgotten in the crash'
	: 'B: the lazily committed lease survived the crash');
like($b_desc, qr/^b_r1:recovery:[12]$/, 'B: b_r1 is received again, deliveries 1 or 2');
my $b_latest = ($b_lease_end > $b_wait_start ? $b_lease_end : $b_wait_start) + 2;
cmp_ok($got_at, '<=', $b_latest, 'B: received again by the end of its lease at the latest');
if ($b_desc =~ /:2$/)
{
	cmp_ok($got_at, '>=', $b_lease_start + $b_vis - 0.2, 'B: a lease that survived is respected until it ends');
}
is($got ? ack($got->[0]) : 'no message', 't', 'B: b_r1 acked');
is(drain('inst_b'), '', 'B: nothing else is received in recovery');
is(sql(q{SELECT rmsg.complete_recovery('inst_b')}), '1', 'B: complete_recovery releases one');
is(drain('inst_b'), 'b_n1:normal:1', 'B: the deferred message, once');

#--- E: completed by the last durable commit --------------------------------
is(view_of('inst_e') . ' ' . state_of('inst_e'), 'normal/2/0/0 {"e": "completed"}',
	'E: the complete_recovery committed right before the crash holds: normal, state saved, two ready');
is(drain('inst_e'), 'e1:normal:1 e2:normal:1', 'E: its two released messages in order');

#--- U: the uncommitted complete_recovery did not happen --------------------
is(view_of('inst_u'), 'recovery/0/4/0', 'U: still in recovery with its four deferred messages');
is(state_of('inst_u'), '{"u": "before"}', 'U: the state of the uncommitted complete_recovery is not there');
is(drain('inst_u'), '', 'U: nothing is received');
is(sql(q{SELECT rmsg.complete_recovery('inst_u')}), '4', 'U: complete_recovery now releases four');
is(drain('inst_u'), names_described('normal', map { "u$_" } 1 .. 4),
	'U: the four deferred messages in order; the uncommitted u_late is not there');

#--- V: the uncommitted begin_recovery did not happen -----------------------
is(view_of('inst_v'), 'normal/2/0/0', 'V: normal mode, its two messages ready');
is(drain('inst_v'), 'v1:normal:1 v2:normal:1', 'V: its two messages in order; the uncommitted v_late is not there');

#--- C, D, M1..M5 kept mode and messages ------------------------------------
is(view_of('inst_c'), 'recovery/0/8/0', 'C: in recovery, eight deferred');
is(view_of('inst_d'), 'recovery/0/6/0', 'D: in recovery, six deferred');
is( sql(q{SELECT string_agg(instance || '=' || mode || '/' || ready || '/' || deferred || '/' || in_flight, ' '
                              ORDER BY instance) FROM rmsg.instances WHERE instance LIKE 'inst_m%'}),
	'inst_m1=normal/3/0/0 inst_m2=normal/3/0/0 inst_m3=normal/3/0/0 inst_m4=normal/3/0/0 inst_m5=recovery/0/2/0',
	'M1..M5 kept their modes and messages');
is( sql('SELECT count(*) FROM rmsg.instances'), '12', 'no instance appeared or disappeared');

my $max_committed = (sort { $b <=> $a } @all_ids)[0];
deliver_seq('inst_v', normal('v3'));
cmp_ok($id{v3}, '>', $max_committed, 'a deliver after the crash gets a fresh msg_id');
is(drain('inst_v'), 'v3:normal:1', 'V: the new message');

#---------------------------------------------------------------------------
# 2. Crash 2, during the release
#---------------------------------------------------------------------------

is(sql(q{SELECT rmsg.complete_recovery('inst_c', '{"phase": "normal"}')}), '8',
	'C: complete_recovery releases eight');
is(deliver_seq('inst_c', normal('c9', 'c10')), 'ready,ready', 'C: two more, ready, after completion');
is(join(' ', map { receive_ack('inst_c') } 1 .. 2), names_described('normal', 'c1', 'c2'),
	'C: the first two released messages received and acked');
@r = receive_rows('inst_c', 1, '1 minute');
is(join(' ', map { describe(@$_) } @r), 'c3:normal:1', 'C: the third received');
is(sql(q{SELECT rmsg.complete_recovery('inst_d', '{"phase": "d"}')}), '6',
	'D: complete_recovery releases six, committed right before crash 2');
is(@r ? ack($r[0][0]) : 'no message', 't', 'C: c3 acked: the last durable commit before crash 2');
my $c_vis = 3;
my $c_lease_start = time;
@r = receive_rows('inst_c', 1, "$c_vis seconds");
is(join(' ', map { describe(@$_) } @r), 'c4:normal:1',
	'C: the fourth leased, not acked, by the last transaction before crash 2');
my $c_lease_end = time + $c_vis;

ok(crash_and_restart(), 'crash 2: the server went through crash recovery');

#--- C: the release goes on where it was -------------------------------------
is(view_sum_of('inst_c'), 'normal/0/7', 'C after crash 2: normal, seven messages left, none deferred');
is(state_of('inst_c'), '{"phase": "normal"}', 'C: the state saved by complete_recovery');
my $c_wait_start = time;
($got, $got_at) = wait_receive('inst_c', '1 minute', $c_vis + 15);
my $c_desc = $got ? describe(@$got) : 'nothing';
like($c_desc, qr/^c4:normal:[12]$/,
	'C: the unacked c4 comes first again (deliveries 1 or 2), nothing overtakes it');
my $c_latest = ($c_lease_end > $c_wait_start ? $c_lease_end : $c_wait_start) + 2;
cmp_ok($got_at, '<=', $c_latest, 'C: c4 is received again by the end of its lease at the latest');
if ($c_desc =~ /:2$/)
{
	cmp_ok($got_at, '>=', $c_lease_start + $c_vis - 0.2, 'C: a lease that survived is respected until it ends');
}
is($got ? ack($got->[0]) : 'no message', 't', 'C: c4 acked');
is(drain('inst_c'), names_described('normal', map { "c$_" } 5 .. 10),
	'C: then c5..c10 in arrival order, once each; the acked c1..c3 never come back, c3 acked just before the crash included');
is(view_of('inst_c'), 'normal/0/0/0', 'C: empty');

#--- D: completed right before the crash ------------------------------------
is(view_of('inst_d'), 'normal/6/0/0', 'D after crash 2: normal, its six messages ready');
is(state_of('inst_d'), '{"phase": "d"}', 'D: the state saved by complete_recovery');
is(deliver_seq('inst_d', normal('d7')), 'ready', 'D: a message after the restart is ready');
is(drain('inst_d'), names_described('normal', map { "d$_" } 1 .. 7),
	'D: the six released messages in arrival order, then the new one; nothing lost, nothing twice');

#--- the instances drained before crash 2 stay empty ------------------------
is( sql(q{SELECT string_agg(instance || '=' || mode || '/' || ready || '/' || deferred || '/' || in_flight, ' '
                              ORDER BY instance)
            FROM rmsg.instances WHERE instance IN ('inst_a', 'inst_b', 'inst_e', 'inst_u', 'inst_v')}),
	'inst_a=normal/0/0/0 inst_b=normal/0/0/0 inst_e=normal/0/0/0 inst_u=normal/0/0/0 inst_v=normal/0/0/0',
	'A, B, E, U, V after crash 2: normal and empty, acks kept');

#---------------------------------------------------------------------------
# 3. receive_any after the restarts
#---------------------------------------------------------------------------

# [instance, msg_id, kind, name, deliveries] rows of a receive_any
sub any_rows
{
	my ($text) = @_;
	return map { [ split /\|/, $_, -1 ] } grep { $_ ne '' } split /\n/, $text;
}

my $any_sql = "SELECT instance, msg_id, kind, convert_from(payload, 'UTF8'), deliveries
                 FROM rmsg.receive_any(%d, '1 minute');";

sub describe_any
{
	my (@rows) = @_;
	return join(' ', sort map { "$_->[0]=" . describe(@$_[ 1 .. 4 ]) } @rows);
}

my $s1 = session_open($node, 'receive_any_1');
my $s2 = session_open($node, 'receive_any_2');
session_query($s1, 'BEGIN;', 'receive_any: s1 begins');
my @first = any_rows(session_query($s1, sprintf($any_sql, 2), 'receive_any: s1 takes two'));
is(scalar(@first), 2, 'receive_any(2) in an open transaction: two messages');
my @second = any_rows(session_query($s2, sprintf($any_sql, 10), 'receive_any: s2 takes the rest'));
is(scalar(@second), 2, 'receive_any(10) meanwhile: the two other instances, not those s1 is receiving');
my %seen;
$seen{ $_->[0] }++ for @first, @second;
is(join(',', map { "$_=$seen{$_}" } sort keys %seen),
	'inst_m1=1,inst_m2=1,inst_m3=1,inst_m4=1',
	'the two consumers got different instances, one message each, M5 (recovering) not among them');
is(describe_any(@first, @second),
	'inst_m1=m1_1:normal:1 inst_m2=m2_1:normal:1 inst_m3=m3_1:normal:1 inst_m4=m4_1:normal:1',
	'each instance handed its first message');
session_query($s1, 'COMMIT;', 'receive_any: s1 commits');
is(scalar(any_rows(sql(sprintf($any_sql, 10)))), 0, 'receive_any while all four are in flight: nothing');

my @in_flight = map { $_->[1] } @first, @second;
my @rounds;
for my $round (2 .. 4)
{
	is(sql('SELECT rmsg.ack(ARRAY[' . join(',', @in_flight) . ']::bigint[])'),
		scalar(@in_flight), "receive_any round $round: the previous messages acked");
	my @rows = any_rows(sql(sprintf($any_sql, 10)));
	push @rounds, describe_any(@rows);
	@in_flight = map { $_->[1] } @rows;
}
is( join(' | ', @rounds),
	join(' | ',
		(map { my $k = $_; join(' ', map { "inst_m$_=m${_}_$k:normal:1" } 1 .. 4) } 2 .. 3), ''),
	'receive_any rounds: the second, then the third message of each instance, then nothing');
is(sql(q{SELECT rmsg.complete_recovery('inst_m5')}), '2', 'M5: complete_recovery releases two');
is(describe_any(any_rows(sql(sprintf($any_sql, 10)))), 'inst_m5=m5_1:normal:1',
	'receive_any now hands M5\'s first message, alone');
is(sql(q{SELECT sum(ready)::text || '/' || sum(deferred) || '/' || sum(in_flight) FROM rmsg.instances}),
	'1/0/1', 'in all: one message ready (m5_2), one in flight (m5_1), nothing deferred');

session_kill($s1);
session_kill($s2);
$node->stop;
done_testing();
