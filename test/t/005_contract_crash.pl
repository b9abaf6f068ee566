use strict;
use warnings FATAL => 'all';

# The committed interaction contract across real crashes (issue 4).  A
# deterministic caller program on one cluster calls four callees on another
# in turn; its log writes (prepare_call, record_reply, checkpoint) commit
# lazily and it forces the WAL only before calling a callee again whose last
# reply is not yet flushed.  The callees do each call's work and store the
# reply in one stable transaction, and keep their last reply per caller.
#  1. force rule, in crash-free runs: the first round of calls never
#     forces; afterwards exactly one force per round, where the
#     called-component table says the reply to be released is not stable;
#     log_stats and pg_stat_wal agree;
#  2. the caller's node crashes (immediate shutdown) at many points: after
#     an unforced and a forcing prepare_call, between a callee's reply and
#     record_reply, after record_reply and checkpoint, twice (during the
#     replay, right after a duplicate reply, right after restart).  Every
#     writer refuses the caller until rmsg.restart (55000); the replayed
#     program ends in the crash-free run's state and every call was executed
#     by its callee exactly once, with the same replies.  The lazy path is
#     real: crashes lose logged replies and resent calls get 'duplicate';
#  3. a callee crash right after a reply committed with synchronous_commit
#     off: the reply was flushed and the duplicate call still gets it;
#  4. replies older than the kept ones are refused (55000); with
#     rmsg.last_call_depth = 3 a caller calls a callee three times before it
#     must force, and the callee keeps three replies;
#  5. both sides in one cluster: the callees' stable commits flush the
#     caller's lazy writes, so the caller never forces.

use Digest::MD5 qw(md5_hex);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

#---------------------------------------------------------------------------
# The clusters
#---------------------------------------------------------------------------

# workers => 1: the server's default, which this file was written against
# (it calls no handler).
my $caller = new_node(
	'caller',
	workers => 1,
	conf    => q{
# the WAL writer flushes lazy commits at most every 10 s (the largest value
# allowed), so they really are pending when the server crashes
wal_writer_delay = '10s'
# record_reply is lazy although commits are synchronous
synchronous_commit = on
# fsync on, or pg_stat_wal.wal_sync counts nothing
fsync = on
# no autovacuum or autoanalyze commit flushing the WAL behind the test's back
autovacuum = off
});

my $callee = new_node(
	'callee',
	workers => 1,
	conf    => q{
# as on the caller's node: only the replies' own commits flush promptly
wal_writer_delay = '10s'
autovacuum = off
});

# The callees' side: each call's work (a row, a per-caller counter) and its
# reply commit together in handle(), one statement.  The reply depends on
# the request and the callee's own state, so a call executed twice would
# show in the replies and the counters.  The caller's node gets it too, for
# part 5.
my $callee_schema = q{
CREATE EXTENSION recoverable_msg;
CREATE TABLE callee_counter (callee text, caller text, n int NOT NULL,
                             PRIMARY KEY (callee, caller));
CREATE TABLE callee_work (callee text, caller text, call_id bigint,
                          request bytea NOT NULL, reply bytea NOT NULL, n int NOT NULL,
                          PRIMARY KEY (callee, caller, call_id));
CREATE FUNCTION handle(p_callee text, p_caller text, p_call_id bigint, p_request bytea,
                       OUT o_status text, OUT o_reply bytea)
LANGUAGE plpgsql AS $$
DECLARE
	a record;
	k int;
BEGIN
	SELECT * INTO a FROM rmsg.accept_call(p_callee, p_caller, p_call_id, p_request);
	o_status := a.status;
	IF a.status = 'duplicate' THEN
		o_reply := a.reply;
		RETURN;
	END IF;
	INSERT INTO callee_counter AS c VALUES (p_callee, p_caller, 1)
	  ON CONFLICT (callee, caller) DO UPDATE SET n = c.n + 1
	  RETURNING c.n INTO k;
	o_reply := convert_to(format('%s#%s:%s', p_callee, k, md5(p_request)), 'UTF8');
	INSERT INTO callee_work VALUES (p_callee, p_caller, p_call_id, p_request, o_reply, k);
	PERFORM rmsg.reply(p_callee, p_caller, p_call_id, o_reply);
END
$$;
};
$callee->safe_psql('postgres', $callee_schema);
$caller->safe_psql('postgres', $callee_schema);

# prepare_call, observed: whether the called-component table says the reply
# the call releases is not stable yet (due), and the flushed LSN just before
# and after.  The reads write nothing, so the transaction stays lazy.
$caller->safe_psql('postgres', q{
CREATE FUNCTION obs_prepare(p_caller text, p_callee text, p_request bytea,
                            OUT call_id bigint, OUT forced boolean, OUT logged_reply bytea,
                            OUT due boolean, OUT flush_before pg_lsn, OUT flush_after pg_lsn)
LANGUAGE plpgsql AS $$
BEGIN
	SELECT NOT c.stable INTO due FROM rmsg.called_components c
	 WHERE c.caller = p_caller AND c.callee = p_callee;
	flush_before := pg_current_wal_flush_lsn();
	SELECT p.call_id, p.forced, p.logged_reply INTO call_id, forced, logged_reply
	  FROM rmsg.prepare_call(p_caller, p_callee, p_request) p;
	flush_after := pg_current_wal_flush_lsn();
END
$$;
CREATE TABLE nudge (at timestamptz DEFAULT now());
});

#---------------------------------------------------------------------------
# Helpers
#---------------------------------------------------------------------------

# Runs SQL in a session; dies on an error or a timeout.
sub run_sql
{
	my ($s, $sql) = @_;
	my ($out, $err) = session_wait($s, session_send($s, $sql), 120);
	die "$s->{name}: timed out on: $sql\n" unless defined $out;
	die "$s->{name}: error on: $sql\n$err" if $err ne '';
	return $out;
}

sub hex_of { my ($bytes) = @_; return '\\x' . unpack('H*', $bytes); }

sub bytes_of
{
	my ($hex) = @_;
	$hex =~ s/^\\x//;
	return pack('H*', $hex);
}

# Waits for the WAL writer to flush an asynchronous commit: its next flush
# is then wal_writer_delay (10 s) away, and a run started now sees no
# flushes but its own.  Whether it did is checked from the flushed LSNs the
# run observes, not assumed.
#
# It vacuums the caller's log first: a prepare_call or checkpoint whose
# lookups prune a page of rmsg.call_log (heap_page_prune_opt writes WAL
# between its two log writes) commits under synchronous_commit, which is
# on here, and would flush too.
sub await_walwriter_flush
{
	$caller->safe_psql('postgres', 'VACUUM rmsg.call_log, rmsg.caller');
	# A synchronous commit first: with all WAL flushed, the WAL writer's
	# next round flushes the asynchronous commit instead of stopping at the
	# last full page, which would take another round.
	$caller->safe_psql('postgres', 'INSERT INTO nudge DEFAULT VALUES');
	my $lsn = $caller->safe_psql('postgres', q{
		BEGIN;
		SET LOCAL synchronous_commit = off;
		INSERT INTO nudge DEFAULT VALUES;
		SELECT pg_current_wal_insert_lsn();
		COMMIT;});
	$caller->poll_query_until('postgres', "SELECT pg_current_wal_flush_lsn() >= '$lsn'")
	  or die 'the WAL writer did not flush an asynchronous commit';
	return;
}

#---------------------------------------------------------------------------
# The caller program: deterministic between calls.  State {step, acc}; call
# step+1 goes to callee s1..s4 in turn with a request made from the state;
# the reply is folded into acc; a checkpoint every 5 calls.
#---------------------------------------------------------------------------

my @callees = qw(s1 s2 s3 s4);
my $K = 24;
my $CKPT_EVERY = 5;
my $rounds = $K / @callees;

sub initial_state { return { step => 0, acc => 'start' }; }

sub next_call
{
	my ($st) = @_;
	return ($callees[ $st->{step} % @callees ],
		"request $st->{step} " . substr($st->{acc}, 0, 16));
}

sub after_reply
{
	my ($st, $reply) = @_;
	return { step => $st->{step} + 1, acc => md5_hex("$st->{acc}|$reply") };
}

sub state_json
{
	my ($st) = @_;
	return qq({"acc": "$st->{acc}", "step": $st->{step}});
}

sub parse_state
{
	my ($json) = @_;
	return initial_state() if $json eq '';
	my ($acc)  = $json =~ /"acc": "([^"]*)"/;
	my ($step) = $json =~ /"step": (\d+)/;
	die "unexpected state $json" unless defined $acc && defined $step;
	return { step => $step, acc => $acc };
}

# A run: name (the caller), cs and es (sessions on the caller's and the
# callees' node), state, and what happened: calls (one hash per prepare_call
# with its observations), writes (the log writes of the current phase, for
# counting the lost ones), in_log (call ids the log held at the restart),
# statuses of the callees' answers.
# The run starts as the protocol says, with rmsg.restart: a new caller
# gets NULL, the initial state.
sub new_run
{
	my ($name, $es) = @_;
	my $cs = session_open($caller, "caller_$name");
	my $start = run_sql($cs, "SELECT rmsg.restart('$name');");
	die "$name: restart of a new caller returned '$start'" if $start ne '';
	return {
		name => $name,
		cs => $cs,
		es => $es,
		state => initial_state(),
		calls => [],
		writes => [],
		in_log => {},
		dups => [],
		replayed => 0,
		lost => 0,
		lost_replies => 0,
		crashes => 0,
		recoveries => 0,
		replies => {},
		obs => [],
	};
}

# Runs the program from $r->{state} until K calls are done (returns 1) or
# until the event named by $stop ([event, call id]) happens (returns 0, the
# server is to crash there).  Events: prepared, replied (the callee
# committed its reply), duplicate (the first 'duplicate' answer), recorded,
# checkpointed.
sub run_program
{
	my ($r, $stop) = @_;
	my $name = $r->{name};
	my $hit = sub {
		my ($event, $id) = @_;
		return 0 unless $stop && $stop->[0] eq $event;
		return 1 if $event eq 'duplicate';
		return $stop->[1] == $id;
	};

	while ($r->{state}{step} < $K)
	{
		my $st = $r->{state};
		my ($callee_name, $req) = next_call($st);
		my ($id, $forced, $logged, $due, $fb, $fa) = split /\|/,
		  run_sql($r->{cs},
			"SELECT call_id, forced, logged_reply, coalesce(due, false), flush_before, flush_after
			   FROM obs_prepare('$name', '$callee_name', '" . hex_of($req) . "');"), -1;
		die "$name: call id $id, expected " . ($st->{step} + 1) if $id != $st->{step} + 1;
		my $call = {
			id => $id, callee => $callee_name, forced => $forced eq 't',
			due => $due eq 't', fb => $fb, fa => $fa, replayed => $logged ne ''
		};
		push @{ $r->{calls} }, $call;
		push @{ $r->{obs} }, [ 'prepare', $fb, $fa, $call->{forced} ];

		my $reply;
		if ($logged ne '')
		{
			$reply = bytes_of($logged);
			$r->{replayed}++;
			return 0 if $hit->('prepared', $id);
		}
		else
		{
			push @{ $r->{writes} }, [ 'call', $id ] unless $r->{in_log}{$id};
			return 0 if $hit->('prepared', $id);
			my ($status, $rep) = split /\|/,
			  run_sql($r->{es},
				"SELECT o_status, o_reply FROM handle('$callee_name', '$name', $id, '"
				  . hex_of($req) . "');");
			$reply = bytes_of($rep);
			$r->{replies}{$id} //= $reply;
			if ($status eq 'duplicate')
			{
				push @{ $r->{dups} }, $id;
				$r->{dup_same} = 0 if $r->{replies}{$id} ne $reply;
				return 0 if $hit->('duplicate', $id);
			}
			return 0 if $hit->('replied', $id);
			my $f = run_sql($r->{cs},
				"SELECT rmsg.record_reply('$name', $id, '" . hex_of($reply)
				  . "'), pg_current_wal_flush_lsn();");
			push @{ $r->{obs} }, [ 'record', (split /\|/, $f)[1] ];
			push @{ $r->{writes} }, [ 'reply', $id ];
			return 0 if $hit->('recorded', $id);
		}
		$st = $r->{state} = after_reply($st, $reply);
		if ($st->{step} % $CKPT_EVERY == 0)
		{
			my $f = run_sql($r->{cs},
				"SELECT rmsg.checkpoint('$name', '" . state_json($st)
				  . "'), pg_current_wal_flush_lsn();");
			push @{ $r->{obs} }, [ 'checkpoint', (split /\|/, $f)[1] ];
			push @{ $r->{writes} }, [ 'ckpt', $st->{step} ];
			return 0 if $hit->('checkpointed', $st->{step});
		}
	}
	return 1;
}

# Whether the flushed LSN moved only where a prepare_call forced: then no
# flush but the contract's own happened during the run, and the force rule
# can be checked exactly.  Returns the number of moves it cannot explain.
sub unexplained_flushes
{
	my ($r) = @_;
	my $n = 0;
	my $last;
	for my $o (@{ $r->{obs} })
	{
		my ($kind, $before, $after, $forced) = @$o;
		$n++ if defined $last && $before ne $last;
		$n++ if $kind eq 'prepare' && !$forced && $after ne $before;
		$last = $after // $before;
	}
	return $n;
}

# The callees' record of a caller's calls, without the caller's name, and
# their counters.
sub callee_rows
{
	my ($node, $name) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) || ' calls: ' || string_agg(format('%s/%s/%s/%s/%s', callee, call_id,
		       md5(request), convert_from(reply, 'UTF8'), n), ' ' ORDER BY call_id)
		  FROM callee_work WHERE caller = '$name'});
}

sub callee_counters
{
	my ($node, $name) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT string_agg(callee || '=' || n, ',' ORDER BY callee)
		  FROM callee_counter WHERE caller = '$name'});
}

my $all_counters = join(',', map { "$_=$rounds" } @callees);

sub log_stats
{
	my ($s) = @_;
	return split /\|/, run_sql($s, 'SELECT forces, forces_avoided FROM rmsg.log_stats;');
}

#---------------------------------------------------------------------------
# 1. Crash-free runs: the reference state, and the force rule
#---------------------------------------------------------------------------

my $es = session_open($callee, 'callees');
my $ref;
my $ref_state;
my $clean;
for my $attempt (1 .. 3)
{
	my $r = new_run($attempt == 1 ? 'ref' : "ref$attempt", $es);
	# The session's only commit so far, the restart, is flushed with the
	# WAL writer's flush below: forces_avoided counts from call 2.
	my ($forces0, $avoided0) = log_stats($r->{cs});
	run_sql($r->{cs}, 'SELECT pg_stat_force_next_flush();');
	my $sync0 = $caller->safe_psql('postgres', 'SELECT wal_sync FROM pg_stat_wal');
	await_walwriter_flush();
	ok(run_program($r), "crash-free run $r->{name} completes $K calls");
	my ($forces1, $avoided1) = log_stats($r->{cs});
	run_sql($r->{cs}, 'SELECT pg_stat_force_next_flush();');
	run_sql($r->{cs}, 'SELECT 1;');    # its end reports the session's WAL stats
	my $sync1 = $caller->safe_psql('postgres', 'SELECT wal_sync FROM pg_stat_wal');
	$r->{forces} = $forces1 - $forces0;
	$r->{avoided} = $avoided1 - $avoided0;
	$r->{wal_sync} = $sync1 - $sync0;
	$r->{unexplained} = unexplained_flushes($r);
	note("$r->{name}: forced calls "
		  . join(',', map { $_->{id} } grep { $_->{forced} } @{ $r->{calls} })
		  . "; log_stats forces $r->{forces}, avoided $r->{avoided}; wal_sync +$r->{wal_sync};"
		  . " flushes not made by the contract: $r->{unexplained}");
	if ($attempt == 1)
	{
		$ref = $r;
		$ref_state = state_json($r->{state});
	}
	else
	{
		is(state_json($r->{state}), $ref_state, "$r->{name} ends in the state of ref");
	}
	if ($r->{unexplained} == 0)
	{
		$clean = $r;
		last;
	}
	diag("$r->{name}: a flush other than the contract's happened during the run; running again");
	session_kill($r->{cs}) if $attempt > 1;
}

is($ref->{state}{step}, $K, "the reference run made $K calls");
is(callee_rows($callee, 'ref') =~ /^(\d+) calls/ ? $1 : '', $K, "the callees executed $K calls of ref");
is(callee_counters($callee, 'ref'), $all_counters, "each callee counted $rounds calls of ref");
my $ref_rows = callee_rows($callee, 'ref');

# With synchronous_commit = on, this also shows that record_reply,
# checkpoint and unforced prepare_calls commit without a flush.
ok(defined $clean,
	'a crash-free run saw no flush but its forces: its other log writes committed lazily');
$clean //= $ref;
my @forced_ids = map { $_->{id} } grep { $_->{forced} } @{ $clean->{calls} };
my $nforced = scalar @forced_ids;
# Nothing is flushed but by the forces, and a force flushes everything:
# calling s1 again (calls 5, 9, ...) releases a reply recorded after the
# previous force, so it forces; s2..s4 find theirs flushed by that force.
is(join(',', grep { $_ <= @callees } @forced_ids), '', 'the first round of calls never forces');
is(join(',', @forced_ids), join(',', map { 1 + $_ * @callees } 1 .. $rounds - 1),
	'afterwards exactly one force per round: before calling s1 again');
is(join(',', map { $_->{id} } grep { $_->{forced} != $_->{due} } @{ $clean->{calls} }), '',
	'a call forced exactly when the called-component table said its callee\'s reply was not stable');
is($clean->{forces}, $nforced, 'log_stats.forces counts the forcing prepare_calls');
is($clean->{avoided}, $K - 1 - $nforced,
	'log_stats.forces_avoided counts every other send after the first: the session\'s last commit was lazy');
cmp_ok($clean->{wal_sync}, '>=', $nforced, 'pg_stat_wal.wal_sync grew by at least the forces');
is( run_sql($clean->{cs}, "SELECT string_agg(callee || ':' || calls || ':' || forces, ',' ORDER BY callee)
		FROM rmsg.called_components WHERE caller = '$clean->{name}';"),
	join(',', map { "$_:$rounds:" . ($_ eq 's1' ? $rounds - 1 : 0) } @callees),
	'called_components: each callee called 6 times, only s1 with forces');

#---------------------------------------------------------------------------
# 2. Crashes of the caller's node
#---------------------------------------------------------------------------

my @crashes = (
	{ name => 'first_call',   at => [ 'prepared', 1 ],
	  what => 'right after the first prepare_call of a new caller' },
	{ name => 'unforced',     at => [ 'prepared', 7 ],
	  what => 'right after an unforced prepare_call, before the call is sent' },
	{ name => 'forcing',      at => [ 'prepared', 9 ],
	  what => 'right after a forcing prepare_call' },
	{ name => 'replied',      at => [ 'replied', 10 ],
	  what => 'after the callee committed its reply, before record_reply' },
	{ name => 'recorded',     at => [ 'recorded', 6 ],
	  what => 'right after record_reply, in the second round' },
	{ name => 'checkpointed', at => [ 'checkpointed', 15 ],
	  what => 'right after a checkpoint' },
	{ name => 'round5',       at => [ 'recorded', 18 ],
	  what => 'in the middle of the fifth round' },
	{ name => 'last',         at => [ 'replied', 24 ],
	  what => 'after the last call was answered, before its record_reply' },
	{ name => 'twice_replay', at => [ 'recorded', 14 ], then => [ 'prepared', 12 ],
	  what => 'after record_reply, then again during the replay' },
	{ name => 'twice_dup',    at => [ 'replied', 20 ], then => [ 'duplicate' ],
	  what => 'before record_reply, then again right after the duplicate answer' },
	{ name => 'twice_restart', at => [ 'recorded', 23 ], then => [ 'restarted' ],
	  what => 'after record_reply, then again right after rmsg.restart' },
);

sub crash_caller_node
{
	my ($r) = @_;
	my $offset = -s $caller->logfile;
	$caller->stop('immediate');
	session_kill($r->{cs});
	$caller->start;
	$r->{crashes}++;
	$r->{recoveries}++
	  if $caller->log_contains(qr/not properly shut down; automatic recovery in progress/, $offset);
	$r->{cs} = session_open($caller, "caller_$r->{name}");
	return;
}

# After a crash: every writer refuses the caller until it restarts; counts
# the log writes of the phase that the crash lost; restarts the caller.
sub probe_and_restart
{
	my ($r, $c) = @_;
	my $name = $r->{name};
	my $cs = $r->{cs};
	my ($callee_name, $req) = next_call($r->{state});
	my $last_id = @{ $r->{calls} } ? $r->{calls}[-1]{id} : 1;
	my @probes;
	for my $q ("SELECT call_id FROM rmsg.prepare_call('$name', '$callee_name', '" . hex_of($req) . "');",
		"SELECT rmsg.record_reply('$name', $last_id, '\\x00');",
		"SELECT rmsg.checkpoint('$name', '" . state_json($r->{state}) . "');")
	{
		# in a transaction rolled back, so that a probe let through changes nothing
		run_sql($cs, 'BEGIN;');
		push @probes, session_sqlstate($cs, $q);
		run_sql($cs, 'ROLLBACK;');
	}
	push @{ $r->{probes} }, join(',', @probes);

	my $covered = run_sql($cs, "SELECT checkpoint_call_id FROM rmsg.caller WHERE caller = '$name';");
	$covered = 0 if $covered eq '';
	my %kept = map { split /\|/ } split /\n/,
	  run_sql($cs, "SELECT call_id, reply IS NOT NULL FROM rmsg.replay('$name');");
	my %lost = (call => 0, reply => 0, ckpt => 0);
	for my $w (@{ $r->{writes} })
	{
		my ($kind, $id) = @$w;
		my $survived =
		    $id <= $covered      ? 1
		  : $kind eq 'ckpt'      ? 0
		  : $kind eq 'call'      ? exists $kept{$id}
		  :                        ($kept{$id} // 'f') eq 't';
		$lost{$kind}++ unless $survived;
	}
	my $nlost = $lost{call} + $lost{reply} + $lost{ckpt};
	$r->{lost_replies} += $lost{reply};
	$r->{lost} += $nlost;
	note("$c->{name}, crash $r->{crashes} ($c->{what}): lost $nlost of "
		  . scalar(@{ $r->{writes} }) . " log writes ($lost{call} calls, $lost{reply} replies, "
		  . "$lost{ckpt} checkpoints); the log keeps the checkpoint of call $covered and "
		  . scalar(keys %kept) . ' calls after it');

	$r->{state} = parse_state(run_sql($cs, "SELECT rmsg.restart('$name');"));
	$r->{in_log} = \%kept;
	$r->{writes} = [];
	return;
}

my ($total_lost, $total_lost_replies, $total_dups, $total_crashes, $total_recoveries) = (0) x 5;
for my $c (@crashes)
{
	my $r = new_run($c->{name}, $es);
	ok(!run_program($r, $c->{at}), "$c->{name}: the program reached its crash point");
	note("$c->{name}: call $c->{at}[1] " . ($r->{calls}[-1]{forced} ? 'forced' : 'did not force'))
	  if $c->{at}[0] eq 'prepared';
	crash_caller_node($r);
	probe_and_restart($r, $c);
	if ($c->{then})
	{
		my $again = $c->{then}[0] eq 'restarted' ? 0 : run_program($r, $c->{then});
		ok(!$again, "$c->{name}: the replay reached its second crash point");
		crash_caller_node($r);
		probe_and_restart($r, $c);
	}
	ok(run_program($r), "$c->{name}: the program completes after the restart");

	is(join(' ', @{ $r->{probes} }), join(' ', ('55000,55000,55000') x $r->{crashes}),
		"$c->{name}: after each crash prepare_call, record_reply and checkpoint refuse the caller until it restarts");
	is(state_json($r->{state}), $ref_state, "$c->{name}: the program ends in the crash-free state");
	is(callee_rows($callee, $c->{name}), $ref_rows,
		"$c->{name}: the callees executed each call once, with the crash-free requests and replies");
	is(callee_counters($callee, $c->{name}), $all_counters,
		"$c->{name}: each callee's counter is $rounds");
	if ($c->{at}[0] eq 'replied')
	{
		my $n = $c->{at}[1];
		ok((grep { $_ == $n } @{ $r->{dups} }) && ($r->{dup_same} // 1),
			"$c->{name}: call $n, answered but not recorded, was sent again and got 'duplicate' with the same reply");
	}
	note("$c->{name}: replies from the log $r->{replayed}, duplicates "
		  . scalar(@{ $r->{dups} }) . ' (calls ' . join(',', @{ $r->{dups} }) . ')');
	$total_lost += $r->{lost};
	$total_lost_replies += $r->{lost_replies};
	$total_dups += @{ $r->{dups} };
	$total_crashes += $r->{crashes};
	$total_recoveries += $r->{recoveries} // 0;
	session_kill($r->{cs});
}
is($total_recoveries, $total_crashes, "each of the $total_crashes crashes went through crash recovery");
cmp_ok($total_lost_replies, '>', 0,
	"the crashes lost recorded replies ($total_lost_replies), $total_lost log writes in all: the log is lazy");
cmp_ok($total_dups, '>', 0, "resent calls got 'duplicate' $total_dups times after restarts");

#---------------------------------------------------------------------------
# 5. One cluster for both sides: the callees' stable commits flush the
#    caller's lazy writes.  Calling s1 again follows three callee commits,
#    each of which flushed the WAL past s1's last recorded reply.
#---------------------------------------------------------------------------

my $local_es = session_open($caller, 'local_callees');
my $local = new_run('local', $local_es);
my ($lforces0) = log_stats($local->{cs});
ok(run_program($local), 'one cluster: the program completes');
my ($lforces1) = log_stats($local->{cs});
is(state_json($local->{state}), $ref_state, 'one cluster: the program ends in the reference state');
is(callee_rows($caller, 'local'), $ref_rows, 'one cluster: the same calls and replies as with two clusters');
is(scalar(grep { $_->{forced} } @{ $local->{calls} }), 0, 'one cluster: no prepare_call forced');
is($lforces1 - $lforces0, 0, 'one cluster: log_stats counts no force');
is( run_sql($local->{cs}, "SELECT string_agg(callee || ':' || stable, ',' ORDER BY callee)
		FROM rmsg.called_components WHERE caller = 'local' AND callee <> 's4';"),
	's1:true,s2:true,s3:true',
	'one cluster: the replies of s1..s3 the caller recorded lazily are stable');
session_kill($_) for ($local->{cs}, $local_es);

#---------------------------------------------------------------------------
# 3. A callee crash right after a reply committed with synchronous_commit off
#---------------------------------------------------------------------------

$callee->safe_psql('postgres', 'CREATE TABLE control (x int)');
my $cc = session_open($callee, 'callee_crash');
my $cc_req = hex_of('callee crash request');
run_sql($cc, 'SET synchronous_commit = off;');
run_sql($cc, 'BEGIN;');
my ($cc_status, $cc_reply) = split /\|/,
  run_sql($cc, "SELECT o_status, o_reply FROM handle('s1', 'cc', 1, '$cc_req');");
my $cc_lsn = run_sql($cc, 'SELECT pg_current_wal_insert_lsn();');
run_sql($cc, 'COMMIT;');
is($cc_status, 'new', 'callee crash: the call is new');
is(run_sql($cc, "SELECT pg_current_wal_flush_lsn() >= '$cc_lsn';"), 't',
	'callee crash: the reply\'s commit was flushed although synchronous_commit is off');
# For contrast, a plain write of the same session: nothing makes it stable.
run_sql($cc, 'BEGIN;');
run_sql($cc, 'INSERT INTO control VALUES (1);');
my $control_lsn = run_sql($cc, 'SELECT pg_current_wal_insert_lsn();');
run_sql($cc, 'COMMIT;');
my $control_flushed = run_sql($cc, "SELECT pg_current_wal_flush_lsn() >= '$control_lsn';");
session_kill($_) for ($cc, $es);
$callee->stop('immediate');
$callee->start;
is($callee->safe_psql('postgres', "SELECT status || ':' || reply FROM rmsg.accept_call('s1', 'cc', 1, '$cc_req')"),
	"duplicate:$cc_reply", 'callee crash: the call sent again gets \'duplicate\' with the saved reply');
is($callee->safe_psql('postgres', "SELECT count(*) || ':' || max(n) FROM callee_work WHERE caller = 'cc'"),
	'1:1', 'callee crash: the work was done once and survived');
note('callee crash: the plain write after the reply was '
	  . ($control_flushed eq 't' ? '' : 'not ') . 'flushed at commit and '
	  . ($callee->safe_psql('postgres', 'SELECT count(*) FROM control') ? 'survived' : 'was lost'));

#---------------------------------------------------------------------------
# 4. Kept replies: depth 1 refuses an older call; depth 3 lets a caller call
#    a callee three times before it must force.
#---------------------------------------------------------------------------

my $old = session_open($callee, 'old_calls');
run_sql($old, "SELECT o_status FROM handle('s1', 'old', $_, '\\x01');") for 1 .. 2;
is(session_sqlstate($old, "SELECT * FROM rmsg.accept_call('s1', 'old', 1, '\\x01');"), '55000',
	'depth 1: after call 2 to s1, call 1 is refused with 55000');
is(run_sql($old, "SELECT status FROM rmsg.accept_call('s1', 'old', 2, '\\x01');"), 'duplicate',
	'depth 1: call 2 is still answered');

# Calls of one caller to s1 only, observed as in the program; returns the
# forced flags and whether only the forces flushed.
sub calls_to_s1
{
	my ($name, $n, $ces) = @_;
	my $r = new_run($name, $ces);
	await_walwriter_flush();
	my @forced;
	for my $i (1 .. $n)
	{
		my ($id, $forced, undef, undef, $fb, $fa) = split /\|/,
		  run_sql($r->{cs}, "SELECT * FROM obs_prepare('$name', 's1', '\\x0$i');"), -1;
		push @{ $r->{obs} }, [ 'prepare', $fb, $fa, $forced eq 't' ];
		push @forced, $forced;
		my (undef, $rep) = split /\|/,
		  run_sql($ces, "SELECT o_status, o_reply FROM handle('s1', '$name', $id, '\\x0$i');");
		my $f = run_sql($r->{cs},
			"SELECT rmsg.record_reply('$name', $id, '$rep'), pg_current_wal_flush_lsn();");
		push @{ $r->{obs} }, [ 'record', (split /\|/, $f)[1] ];
	}
	session_kill($r->{cs});
	return (join(',', @forced), unexplained_flushes($r));
}

# Runs calls_to_s1 until no flush but the contract's happened (3 tries).
# Returns the forced flags and the caller's name in the last try.
sub clean_calls_to_s1
{
	my ($name, $n, $ces) = @_;
	my ($forced, $unexplained, $used);
	for my $attempt (1 .. 3)
	{
		$used = $attempt == 1 ? $name : "$name$attempt";
		($forced, $unexplained) = calls_to_s1($used, $n, $ces);
		return ($forced, $used) if $unexplained == 0;
		diag("$used: a flush other than the contract's happened; running again");
	}
	return ("$forced, with other flushes", $used);
}

is((clean_calls_to_s1('shallow', 2, $old))[0], 'f,t', 'depth 1: the second call to s1 forces');

for my $node ($caller, $callee)
{
	$node->safe_psql('postgres', 'ALTER SYSTEM SET rmsg.last_call_depth = 3');
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	$node->poll_query_until('postgres', 'SHOW rmsg.last_call_depth', '3')
	  or die 'rmsg.last_call_depth = 3 not loaded';
}
session_kill($old);
my $deep_es = session_open($callee, 'deep_callee');
is(run_sql($deep_es, 'SHOW rmsg.last_call_depth;'), '3', 'depth 3 on the callees\' node');
my ($deep_forced, $deep_name) = clean_calls_to_s1('deep', 4, $deep_es);
is($deep_forced, 'f,f,f,t',
	'depth 3: calls 2 and 3 to s1 do not force (nothing flushed the replies), call 4 does');
is( $callee->safe_psql('postgres',
		"SELECT string_agg(call_id::text, ',' ORDER BY call_id) FROM rmsg.last_calls
		  WHERE callee = 's1' AND caller = '$deep_name'"),
	'2,3,4', 'depth 3: s1 keeps the replies to the last 3 calls');
is(session_sqlstate($deep_es, "SELECT * FROM rmsg.accept_call('s1', '$deep_name', 1, '\\x01');"), '55000',
	'depth 3: call 1, older than the kept replies, is refused with 55000');
is(run_sql($deep_es, "SELECT status FROM rmsg.accept_call('s1', '$deep_name', 2, '\\x02');"),
	'duplicate', 'depth 3: call 2 is still answered');
session_kill($deep_es);

$caller->stop;
$callee->stop;
done_testing();
