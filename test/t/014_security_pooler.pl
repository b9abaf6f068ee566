use strict;
use warnings FATAL => 'all';

# Data tokens behind a real PgBouncer in transaction pooling mode.  Four
# clients share two server backends, so consecutive transactions of one
# client often run on different backends, and each backend serves several
# clients.  In 1.0, rmsg.last_data_token() answered across transactions:
# a client asking for it after its put could be handed another client's
# token, and a put by that token stored the other client's data.  Here we
# check, with every client carrying its id and round in its payloads, that
#   a. last_data_token() is NULL in any transaction after the put;
#   b. inside one explicit transaction it names the client's own data;
#   c. a token from put_with_token used in a later transaction stores the
#      client's own bytes, by reference on the same backend only;
#   d. another client's token with other bytes is refused (22023) or the
#      bytes given are stored, never the other client's;
# that ordinary put, get (with and without a wait) and ack work through the
# pooler, and that the pooler really moved clients between backends.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::MD5 qw(md5_hex);
use Time::HiRes qw(time usleep);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;
use RmsgPooler;

# test/check.sh installs the Debian package; only a machine set up by hand
# may lack it.
plan skip_all => 'PgBouncer is not installed (' . pgbouncer_binary() . ', Debian package pgbouncer)'
  unless -x pgbouncer_binary();

use constant CLIENTS => 4;
use constant ROUNDS => 60;       # rounds of steps a, b and c per client
use constant D_ROUNDS => 16;     # rounds of step d
use constant POOL_SIZE => 2;

#---------------------------------------------------------------------------
# Payloads: a unit naming client, round and step, repeated to one of three
# sizes: above rmsg.inline_payload_max (2000 bytes, a payload row of its
# own), below it (inline), and tiny.  Every unit is 10 bytes, so the
# payloads of two clients in one round have the same size and differ only
# in their bytes, and any message shows whose data it holds.
#---------------------------------------------------------------------------
sub unit
{
	my ($c, $r, $kind) = @_;
	return sprintf('c%d r%03d %s;', $c, $r, $kind);
}

sub reps
{
	my ($r) = @_;
	return (300, 20, 1)[ $r % 3 ];
}

sub payload_sql
{
	my ($c, $r, $kind) = @_;
	return sprintf("convert_to(repeat('%s', %d), 'UTF8')", unit($c, $r, $kind), reps($r));
}

sub payload_bytes
{
	my ($c, $r, $kind) = @_;
	return unit($c, $r, $kind) x reps($r);
}

# Runs SQL (ending with ';') in a session; returns (stdout, stderr).  A
# session that does not answer within a minute ends the test: what follows
# would only be noise.
sub run_sql
{
	my ($s, $sql) = @_;
	my ($out, $err) = session_wait($s, session_send($s, $sql), 60);
	die "session $s->{name} did not answer: $sql" unless defined $out;
	return ($out, $err);
}

# Waits for statement $n of every session in @$jobs ([session, n] pairs),
# pumping all of them in turn so that none stalls on a full pipe while we
# wait for another; returns their (stdout, stderr) pairs in order.
sub wait_all
{
	my ($timeout, @jobs) = @_;
	my @res;
	my $deadline = time + $timeout;
	while (grep { !defined } @res[ 0 .. $#jobs ])
	{
		die "pooled clients did not finish within $timeout s" if time > $deadline;
		for my $i (0 .. $#jobs)
		{
			next if defined $res[$i];
			my ($out, $err) = session_wait($jobs[$i][0], $jobs[$i][1], 0.02);
			$res[$i] = [ $out, $err ] if defined $out;
		}
	}
	return @res;
}

my $t0 = time;

#---------------------------------------------------------------------------
# The server, and PgBouncer in front of it.
#---------------------------------------------------------------------------
# No background worker: it would collect payload rows on its own schedule,
# where this file compares which rows messages reference.
my $node = new_node('pooled', workers => 0);
$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION recoverable_msg;
	SELECT rmsg.create_queue(q)
	  FROM unnest(ARRAY['pq', 'pq2', 'pq3', 'pqd', 'pq4', 'plain']) q;
});

# Four clients share two backends (no reserve).  server_round_robin 0 (the
# default, written out by start_pgbouncer because step d relies on it): a
# released backend is the next one handed out (LIFO).
my $pooler = start_pgbouncer($node,
	databases => { postgres => 'pool_mode=transaction pool_size=' . POOL_SIZE });
pass('PgBouncer accepts connections');
like(RmsgPooler::admin($pooler, 'SHOW CONFIG'),
	qr/^pool_mode\|transaction\|/m, 'PgBouncer pools by transaction');
my $pooled = $pooler->{connstr}->('postgres');

my @clients = map { session_open($node, "client$_", $pooled) } 1 .. CLIENTS;
unshift @clients, undef;    # clients are numbered from 1
for my $c (1 .. CLIENTS)
{
	my ($out, $err) = run_sql($clients[$c], 'SELECT 1;');
	die "client $c could not connect through PgBouncer: $err" unless $out eq '1';
}

#---------------------------------------------------------------------------
# Steps a, b and c, every client at once, many rounds each.  Each line of
# output names its step, client and round, and the backend of the
# transaction (pg_backend_pid()).  psql variables (\gset) carry the token of
# step c to the next transaction on the client's side, as an application
# would.
#---------------------------------------------------------------------------
sub round_sql
{
	my ($c, $r) = @_;
	my ($pa, $pb, $pc) = map { payload_sql($c, $r, $_) } qw(a b c);
	my $tag = "$c|$r";
	return <<"EOS";
SELECT 'A1|$tag', pg_backend_pid(), rmsg.put('pq', $pa);
SELECT 'A2|$tag', pg_backend_pid(), coalesce(rmsg.last_data_token()::text, 'null');
BEGIN;
SELECT 'B1|$tag', pg_backend_pid(), rmsg.put('pq', $pb);
SELECT 'B2|$tag', pg_backend_pid(), rmsg.last_data_token() IS NOT NULL,
       rmsg.put('pq2', NULL::bytea, data_token => rmsg.last_data_token());
COMMIT;
\\unset tok
SELECT pg_backend_pid() AS pid, msg_id AS id, token AS tok
  FROM rmsg.put_with_token('pq', $pc) \\gset
SELECT 'C|$tag', :pid, :id, :tok, pg_backend_pid(), rmsg.put('pq3', $pc, data_token => :tok);
EOS
}

my @jobs;
for my $c (1 .. CLIENTS)
{
	my $script = join('', map { round_sql($c, $_) } 1 .. ROUNDS);
	push @jobs, [ $clients[$c], session_send($clients[$c], $script) ];
}
my @results = wait_all(120, @jobs);

# msg_id => [client, round, step] of what each message must hold, per queue.
my %expect;
my (%txn_pids, %clients_of_pid, @c_pairs);
my ($a_lines, $a_not_null, $a_other_backend) = (0, 0, 0);
my ($b_lines, $b_token_seen, $b_split) = (0, 0, 0);
my $errors = '';
for my $c (1 .. CLIENTS)
{
	my ($out, $err) = @{ $results[ $c - 1 ] };
	$errors .= $err;
	my %a1_pid;
	for my $line (split /\n/, $out)
	{
		my ($step, $lc, $r, @f) = split /\|/, $line;
		if ($step eq 'A1')
		{
			$expect{pq}{ $f[1] } = [ $lc, $r, 'a' ];
			push @{ $txn_pids{$lc} }, $f[0];
			$a1_pid{$r} = $f[0];
		}
		elsif ($step eq 'A2')
		{
			$a_lines++;
			$a_not_null++ if $f[1] ne 'null';
			$a_other_backend++ if $f[0] ne $a1_pid{$r};
			push @{ $txn_pids{$lc} }, $f[0];
		}
		elsif ($step eq 'B1')
		{
			$expect{pq}{ $f[1] } = [ $lc, $r, 'b' ];
			push @{ $txn_pids{$lc} }, $f[0];
		}
		elsif ($step eq 'B2')
		{
			$b_lines++;
			$b_token_seen++ if $f[1] eq 't';
			$b_split++ if $f[0] ne $txn_pids{$lc}[-1];
			$expect{pq2}{ $f[2] } = [ $lc, $r, 'b' ];
		}
		elsif ($step eq 'C')
		{
			my ($pid1, $id1, $tok, $pid2, $id2) = @f;
			$expect{pq}{$id1} = [ $lc, $r, 'c' ];
			$expect{pq3}{$id2} = [ $lc, $r, 'c' ];
			push @{ $txn_pids{$lc} }, $pid1, $pid2;
			push @c_pairs, { id1 => $id1, id2 => $id2, same => $pid1 eq $pid2, r => $r };
		}
		else
		{
			$errors .= "unexpected output line: $line\n";
		}
	}
}
is($errors, '', 'the pooled clients ran every statement of steps a-c without error');
is($a_lines, CLIENTS * ROUNDS, 'every round of every client answered');

# a. In 1.0 this answered the backend's last token, whoever's put it was.
is($a_not_null, 0,
	'a: last_data_token() is NULL in the transaction after the put, in every round');
# b. And the same function does answer within the put's transaction, so the
# NULLs above come from the transaction boundary, not from a function that
# never answers through the pooler.
is($b_token_seen, CLIENTS * ROUNDS,
	'b: inside one transaction last_data_token() names the put just made');
is($b_split, 0, 'b: each explicit transaction ran on one backend');

# How much the pooler moved clients between backends.
my ($txns, $switches) = (0, 0);
for my $c (1 .. CLIENTS)
{
	my @p = @{ $txn_pids{$c} // [] };
	$txns += @p;
	$switches += grep { $p[$_] ne $p[ $_ - 1 ] } 1 .. $#p;
	$clients_of_pid{$_}{$c} = 1 for @p;
}
my $c_same = grep { $_->{same} } @c_pairs;
note(sprintf(
		'backend switches: %d of %d consecutive transactions of a client ran on another backend '
		  . 'than the one before; a: %d of %d reads after a put on another backend; '
		  . 'c: %d of %d later puts by token on the same backend',
		$switches, $txns - CLIENTS, $a_other_backend, $a_lines, $c_same, scalar @c_pairs));
note('backends: '
	  . join(', ',
		map { "$_ served clients " . join(',', sort keys %{ $clients_of_pid{$_} }) }
		  sort keys %clients_of_pid));
cmp_ok($switches, '>', 0, 'pooling moved clients between backends');
cmp_ok(scalar(keys %clients_of_pid), '<=', POOL_SIZE,
	'all clients ran on at most ' . POOL_SIZE . ' backends');
ok((grep { keys %{ $clients_of_pid{$_} } > 1 } keys %clients_of_pid),
	'a backend served transactions of several clients');

#---------------------------------------------------------------------------
# d. Another client's token, with bytes of the same size that are not its
# data.  The donor puts with put_with_token; the taker then uses that token
# in an explicit transaction.  Odd rounds, a third client first holds the
# backend the pooler would hand out next (the donor's, LIFO), so that the
# taker lands on the other backend; even rounds it lands on the donor's.
# On the donor's backend the token is known, for the same role: the other
# bytes must be refused (22023).  On the other backend the token is
# unknown: with no payload the put fails (22023), with one it is written.
#---------------------------------------------------------------------------
my ($d_refused, $d_written, $d_unknown_refused, $d_wrong) = (0, 0, 0, 0);
$errors = '';
for my $r (1 .. D_ROUNDS)
{
	my $donor = ($r - 1) % CLIENTS + 1;
	my $taker = $donor % CLIENTS + 1;
	my $holder = $taker % CLIENTS + 1;
	my ($out, $err) = run_sql($clients[$donor],
		    "SELECT pg_backend_pid() || '|' || msg_id || '|' || token FROM rmsg.put_with_token('pqd', "
		  . payload_sql($donor, $r, 'D') . ');');
	$errors .= $err;
	my ($dpid, $did, $tok) = split /\|/, $out;
	$expect{pqd}{$did} = [ $donor, $r, 'D' ];

	if ($r % 2)
	{
		($out, $err) = run_sql($clients[$holder], "BEGIN;\nSELECT pg_backend_pid();");
		$errors .= $err;
	}

	my ($tpid, $e1) = run_sql($clients[$taker], "BEGIN;\nSELECT pg_backend_pid();");
	$errors .= $e1;
	if ($tpid ne $dpid)
	{
		# The token alone names nothing on this backend.
		my ($o2, $e2) = run_sql($clients[$taker],
			"SAVEPOINT s;\nSELECT rmsg.put('pq4', NULL::bytea, data_token => $tok);");
		if ($e2 =~ /ERROR:\s+22023:/)
		{
			$d_unknown_refused++;
		}
		else
		{
			$d_wrong++;
			diag("d round $r: an unknown token alone was not refused: '$o2' $e2");
		}
		(undef, $e2) = run_sql($clients[$taker], 'ROLLBACK TO SAVEPOINT s;');
		$errors .= $e2;
	}
	my ($mid, $e3) = run_sql($clients[$taker],
		    "SELECT rmsg.put('pq4', "
		  . payload_sql($taker, $r, 'd')
		  . ", data_token => $tok);");
	if ($e3 =~ /ERROR:\s+22023:/)
	{
		$d_refused++;
		if ($tpid ne $dpid)
		{
			$d_wrong++;
			diag("d round $r: refused on another backend than the token's, where it is unknown");
		}
	}
	elsif ($e3 eq '' && $mid =~ /^\d+$/)
	{
		$d_written++;
		$expect{pq4}{$mid} = [ $taker, $r, 'd' ];
		if ($tpid eq $dpid)
		{
			$d_wrong++;
			diag("d round $r: other bytes accepted with a token this backend knows");
		}
	}
	else
	{
		$d_wrong++;
		diag("d round $r: unexpected answer '$mid' $e3");
	}
	(undef, $e3) = run_sql($clients[$taker], 'COMMIT;');
	$errors .= $e3;
	if ($r % 2)
	{
		(undef, $err) = run_sql($clients[$holder], 'COMMIT;');
		$errors .= $err;
	}
}
is($errors, '', 'd: the statements around the puts ran without error');
is($d_wrong, 0,
	'd: on the token\'s backend other bytes are refused, elsewhere the token is unknown');
note("d: $d_refused refused on the donor's backend (22023), $d_written written "
	  . "as given on the other backend, where the token alone was refused $d_unknown_refused times");
cmp_ok($d_refused, '>', 0, 'd: some takers landed on the donor\'s backend and were refused');
cmp_ok($d_written, '>', 0, 'd: some takers landed on the other backend and wrote their bytes');
is($d_unknown_refused, $d_written,
	'd: there, the token alone (no payload) was refused each time (22023)');

#---------------------------------------------------------------------------
# Ordinary use through the pooler: puts, a get and its ack in one
# transaction, a get whose acks (by receipt) come from another client in
# later transactions, and a get with a wait woken by a put of another
# client.
#---------------------------------------------------------------------------
my @put_ids;
for my $i (1 .. 6)
{
	my ($id, $err) = run_sql($clients[1], "SELECT rmsg.put('plain', 'm$i'::text);");
	is($err, '', "plain put m$i through the pooler");
	push @put_ids, $id;
}
my ($out, $err) = run_sql(
	$clients[2], q{BEGIN;
SELECT string_agg(convert_from(payload, 'UTF8'), ',' ORDER BY msg_id),
       rmsg.ack(array_agg(msg_id))
  FROM rmsg.get('plain', max => 2);
COMMIT;});
is($err, '', 'a get and its ack in one transaction through the pooler');
is($out, 'm1,m2|2', 'it takes the two oldest messages and acks both');

($out, $err) = run_sql($clients[3],
	"SELECT msg_id || '|' || convert_from(payload, 'UTF8') || '|' || receipt
	   FROM rmsg.get('plain', max => 4, visibility => '1 minute') ORDER BY msg_id;");
is($err, '', 'a get of four through the pooler');
my @leases = map { [ split /\|/ ] } split /\n/, $out;
is(join(',', map { $_->[1] } @leases), 'm3,m4,m5,m6', 'it takes the other four in order');
my $acked = '';
for my $l (@leases)
{
	my ($ans, $e) = run_sql($clients[4], "SELECT rmsg.ack($l->[0], $l->[2]);");
	$acked .= $ans . $e;
}
is($acked, 'tttt', 'another client acks each by its receipt, in transactions of its own');

my $n = session_send($clients[2],
	"SELECT convert_from(payload, 'UTF8') || '|' || rmsg.ack(msg_id)
	   FROM rmsg.get('plain', wait => '20 seconds');");
ok( $node->poll_query_until(
		'postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE state = 'active' AND query LIKE '%rmsg.get(''plain'', wait%'
		   AND wait_event_type IS NOT NULL}),
	'a get with a wait sleeps on a pooled backend');
(undef, $err) = run_sql($clients[1], "SELECT rmsg.put('plain', 'late'::text);");
is($err, '', 'a put while another client waits in a get');
($out, $err) = session_wait($clients[2], $n, 30);
is($out, 'late|true', 'the waiting get is woken with the message, and acks it');
is($node->safe_psql(
		'postgres', "SELECT ready + in_flight + delayed FROM rmsg.queues WHERE queue = 'plain'"),
	'0', 'queue plain is empty afterwards');

#---------------------------------------------------------------------------
# Every message holds exactly the bytes its client meant.  Read as
# superuser on a direct connection, by rmsg.get, which reads the data
# wherever the message keeps it (inline or in a payload row).
#---------------------------------------------------------------------------

# c: the later put by token referenced the first put's payload row exactly
# when it ran on the same backend (only there is the token known).  Only
# the large payloads have a row of their own to compare.
my %row_of = map { split /\|/ }
  split /\n/,
  $node->safe_psql('postgres',
	"SELECT msg_id || '|' || coalesce(payload_id, 0) FROM rmsg.message");
my ($c_big, $c_shared, $c_bad) = (0, 0, 0);
for my $p (grep { reps($_->{r}) == 300 } @c_pairs)
{
	$c_big++;
	my $shared = $row_of{ $p->{id1} } != 0 && $row_of{ $p->{id1} } == $row_of{ $p->{id2} };
	$c_shared++ if $shared;
	$c_bad++ if $shared != $p->{same};
}
note("c: $c_shared of $c_big large later puts by token referenced the first put's row");
is($c_bad, 0,
	'c: a later put by token references the data on the same backend, and only there');

for my $q (qw(pq pq2 pq3 pqd pq4))
{
	my %want = %{ $expect{$q} // {} };
	my ($wrong, $foreign, $missing) = (0, 0, 0);
	my $got = $node->safe_psql(
		'postgres', "
		SELECT msg_id || '|' || md5(payload) || '|' || convert_from(substr(payload, 1, 10), 'UTF8')
		  FROM rmsg.get('$q', max => 10000, visibility => '1 hour')");
	for my $line (split /\n/, $got)
	{
		my ($id, $md5, $head) = split /\|/, $line;
		my $w = delete $want{$id};
		if (!defined $w)
		{
			$wrong++;
			diag("$q: message $id was not put by any client ($head...)");
			next;
		}
		next if $md5 eq md5_hex(payload_bytes(@$w));
		$wrong++;
		my ($whose) = $head =~ /^c(\d+) /;
		$foreign++ if defined $whose && $whose != $w->[0];
		diag("$q: message $id of client $w->[0] round $w->[1] holds '$head...'")
		  if $wrong <= 5;
	}
	$missing = keys %want;
	is($wrong, 0, "$q: every message holds exactly its client's bytes"
		  . ($foreign ? " ($foreign hold another client's)" : ''));
	is($missing, 0, "$q: every message put is there");
}
is(scalar(keys %{ $expect{pq2} }), CLIENTS * ROUNDS, 'pq2 holds one message per client and round');
is(scalar(keys %{ $expect{pq3} }), CLIENTS * ROUNDS, 'pq3 holds one message per client and round');

session_kill($clients[$_]) for 1 .. CLIENTS;
stop_pgbouncer($pooler);
$node->stop;
note(sprintf('runtime %.1f s', time - $t0));

done_testing();
