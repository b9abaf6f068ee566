use strict;
use warnings FATAL => 'all';

# Fuzzing every function of schema rmsg with bad and extreme arguments.
#
# The functions are read from the catalog, so a function added later is
# fuzzed without anyone touching this file.  For each one we vary one
# argument at a time over candidates of its type (NULL, empty, too long,
# odd characters, out-of-range numbers and intervals, oversized payloads,
# arrays of the wrong shape...) while the others keep a sensible value,
# plus a few all-NULL and all-extreme combinations.  Every call must
#   - fail, if it fails, with a clean SQLSTATE: never an internal error
#     (class XX), a lost connection (crash), a statement timeout (hang, at
#     5 s) or an out-of-memory error;
#   - leave the extension's state as it was: the rows of every rmsg table,
#     and the disposition a delivery to each instance would get (which
#     goes through the mode cache in shared memory, and must agree with the
#     instance's mode in the table).  Sequences are left out: nextval is
#     never rolled back.
#
# Modes, each a psql session running a generated script:
#   savepoint:  the superuser, each call in a savepoint rolled back after
#               it, so that even successful calls leave nothing behind;
#   autocommit: the superuser, each call that failed above again, as a
#               top-level statement of its own, so that a write made
#               outside the transaction's rollback would show;
#   prepared:   each call that wrote above, in a transaction prepared and
#               rolled back with ROLLBACK PREPARED;
#   fuzzer:     a role with no right in the extension but put on one
#               queue, calls in savepoints;
#   read_only:  the superuser, each call in BEGIN READ ONLY: nothing may
#               change, and a call that wrote in savepoint mode must fail
#               with 25006;
#   prepared_commit: last, one writing call per function committed with
#               COMMIT PREPARED (the mode cache must follow).
# One assertion per function per mode names the offending calls; every
# call's outcome is written to 016_security_fuzz_calls.txt in the log
# directory.  A self check first makes sure the harness itself sees an
# internal error and a lost connection.

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgNode;

my $t0 = time;

# No background worker: it would change the state (maintenance, handlers)
# between two fingerprints.
my $node = new_node(
	'security_fuzz',
	workers => 0,
	conf    => q{
max_prepared_transactions = 10
autovacuum = off
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

#---------------------------------------------------------------------------
# The state the calls run against: queues (one with a dead-letter queue,
# one deduplicating by content, one with a dead message, one subscribed),
# messages ready, leased and delayed, an instance in recovery with
# recovery and deferred messages, one with a leased message, a caller with
# a replied and a pending call, a handler, and grants.
#---------------------------------------------------------------------------
sql(q{
CREATE EXTENSION recoverable_msg;
CREATE ROLE fuzzer LOGIN;
GRANT USAGE ON SCHEMA rmsg TO fuzzer;
CREATE FUNCTION public.fz_handler(payload bytea) RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION public.fz_ihandler(instance text, payload bytea) RETURNS void LANGUAGE sql AS '';
CREATE PROCEDURE public.fz_proc(payload bytea) LANGUAGE sql AS '';
SELECT rmsg.create_queue('fz_dlq');
SELECT rmsg.create_queue('fz_q', 3, 'fz_dlq');
SELECT rmsg.create_queue('fz_dedup', 5, NULL, 'content');
SELECT rmsg.create_queue('fz_dead', 1);
SELECT rmsg.create_queue('fz_q2');
SELECT rmsg.put('fz_q', 'leased'::text, '{"h":1}');
CREATE TABLE public.fz_ids AS SELECT msg_id AS leased, receipt FROM rmsg.get('fz_q', 1, '1 hour');
SELECT rmsg.put('fz_q', 'ready'::text);
SELECT rmsg.put('fz_q', 'delayed'::text, NULL, '1 hour');
SELECT rmsg.put('fz_dedup', convert_to(repeat('d', 3000), 'UTF8'));
SELECT rmsg.put('fz_dedup', convert_to(repeat('d', 3000), 'UTF8'));
-- max_deliveries 1: the second get finds the message used up and keeps it dead
SELECT rmsg.put('fz_dead', 'dead'::text);
SELECT rmsg.nack(msg_id, NULL, receipt) FROM rmsg.get('fz_dead');
SELECT count(*) FROM rmsg.get('fz_dead');
SELECT rmsg.create_instance('fz_i1', '{"n":1}');
SELECT * FROM rmsg.deliver('fz_i1', 'early');
SELECT rmsg.begin_recovery('fz_i1');
SELECT * FROM rmsg.deliver('fz_i1', 'rec', 'recovery');
SELECT * FROM rmsg.deliver('fz_i1', 'late');
SELECT rmsg.create_instance('fz_i2');
SELECT * FROM rmsg.deliver('fz_i2', 'm1');
SELECT * FROM rmsg.deliver('fz_i2', 'm2');
CREATE TABLE public.fz_ids2 AS SELECT msg_id AS ileased, receipt AS ireceipt FROM rmsg.receive('fz_i2', 1, '1 hour');
SELECT * FROM rmsg.prepare_call('fz_caller', 'fz_callee', 'req1');
SELECT * FROM rmsg.accept_call('fz_callee', 'fz_caller', 1, 'req1');
SELECT rmsg.reply('fz_callee', 'fz_caller', 1, 'rep1');
SELECT rmsg.record_reply('fz_caller', 1, 'rep1');
SELECT * FROM rmsg.prepare_call('fz_caller', 'fz_callee', 'req2');
SELECT rmsg.subscribe('fz_q2', 'public.fz_handler(bytea)');
SELECT rmsg.set_handler('fz_h-', 'public.fz_ihandler(text,bytea)');
SELECT rmsg.grant_queue('fz_q', 'pg_monitor', 'get');
SELECT rmsg.grant_queue('fz_q2', 'fuzzer', 'put');
SELECT rmsg.grant_instance('fz_i2', 'pg_monitor', 'receive');
SELECT rmsg.grant_component('fz_callee', 'pg_monitor', 'use');
});

my %id;
@id{qw(leased receipt ileased ireceipt)} =
  split /\|/, sql('SELECT leased, receipt, ileased, ireceipt FROM public.fz_ids, public.fz_ids2');
@id{qw(ready delayed)} = split /\n/, sql(q{
	SELECT msg_id FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
	 WHERE q.name = 'fz_q' AND m.msg_id <> (SELECT leased FROM public.fz_ids)
	 ORDER BY msg_id});
$id{dead} = sql('SELECT msg_id FROM rmsg.dead_message');
$id{dedup} = sql(q{SELECT min(msg_id) FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
	WHERE q.name = 'fz_dedup'});
is(sql(q{SELECT string_agg(queue || ':' || ready || '/' || in_flight || '/' || delayed || '/' || dead, ' ' ORDER BY queue)
	FROM rmsg.queues}),
	'fz_dead:0/0/0/1 fz_dedup:2/0/0/0 fz_dlq:0/0/0/0 fz_q:1/1/1/0 fz_q2:0/0/0/0',
	'the state to fuzz: queues with ready, leased, delayed and dead messages');

#---------------------------------------------------------------------------
# The harness's objects, outside schema rmsg.  fz_fingerprint runs as the
# superuser so that the fuzzer role gets the same view of the state.
#---------------------------------------------------------------------------
sql(q{
CREATE TABLE public.fz_result (mode text, id int, st text, st2 text, em text,
                               fp_in text, fp_sub text, fp_end text, fp_before text);
GRANT INSERT ON public.fz_result TO fuzzer;

-- Per table of schema rmsg, found in the catalog: a digest of its rows.
-- Then, in a read-write transaction, what a delivery to each instance
-- would be told (ready or deferred), in a subtransaction rolled back,
-- marked with '!' when that is not what the instance's mode in the table
-- says: the mode cache is out of step.
CREATE FUNCTION public.fz_fingerprint() RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  r record;
  h text;
  d text;
  e text;
  acc text := '';
BEGIN
  FOR r IN SELECT c.oid::regclass AS rel, c.relname FROM pg_class c
            WHERE c.relnamespace = 'rmsg'::regnamespace AND c.relkind IN ('r', 'p')
            ORDER BY c.relname
  LOOP
    EXECUTE format('SELECT left(md5(coalesce(string_agg(t::text, E''\n'' ORDER BY t::text), '''')), 8) FROM %s t',
                   r.rel) INTO h;
    acc := acc || r.relname || '=' || h || ' ';
  END LOOP;
  IF current_setting('transaction_read_only') = 'off' THEN
    FOR r IN SELECT name, mode FROM rmsg.instance ORDER BY name LOOP
      BEGIN
        SELECT disposition INTO d FROM rmsg.deliver(r.name, '\x'::bytea);
        RAISE SQLSTATE 'FZ001';
      EXCEPTION WHEN SQLSTATE 'FZ001' THEN NULL;
                WHEN OTHERS THEN d := SQLSTATE;
      END;
      -- (IF would end its condition at the CASE's THEN)
      e := CASE r.mode WHEN 'recovery' THEN 'deferred' ELSE 'ready' END;
      IF d <> e THEN
        d := d || '!';
      END IF;
      acc := acc || r.name || ':' || d || ' ';
    END LOOP;
  END IF;
  RETURN acc;
END
$$;

-- Whether a candidate value is valid SQL at all ('infinity'::interval is
-- not, in PostgreSQL 15): those that are not are left out.
CREATE FUNCTION public.fz_valid(expr text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE 'SELECT ' || expr;
  RETURN true;
EXCEPTION WHEN OTHERS THEN
  RETURN false;
END
$$;

-- For the self check: an internal error, as an elog(ERROR) in C raises it.
CREATE FUNCTION public.fz_internal_error() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  RAISE SQLSTATE 'XX000' USING MESSAGE = 'fuzz self check';
END
$$;
});

#---------------------------------------------------------------------------
# Candidate values, as SQL expressions, per type.  Numbers are quoted so
# that the minimum of a type is read as one literal, not as minus a number
# beyond the type's range.
#---------------------------------------------------------------------------

sub lit
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

my @names = qw(fz_q fz_q2 fz_dlq fz_i1 fz_i2 fz_caller fz_callee fz_h-);
my @text = (
	'NULL', lit(''), lit('x'), (map { lit($_) } @names),
	lit('FZ_Q'), lit('a' x 63), lit('a' x 64), q{repeat('x', 10000)},
	lit('fz q'), lit("fz'q"), lit('fz"q'), lit("fz_q'); DROP TABLE rmsg.queue; --"),
	lit("f\xc3\xbc\xe5\x90\x8d"),    # UTF-8 letters beyond ASCII
	lit('%s%s%n'), lit('\0'), lit('fz_%'), lit('fz_q '), lit(' '), lit('..'),
	lit('-'));
# For arguments that take a word (privileges, kinds, dedup modes): the words
# of every function, in odd spellings too.
my @words = map { lit($_) } (
	'all', 'ALL', 'get', 'put', 'manage', 'use', 'deliver', 'receive',
	'get, put', 'get,,put', 'put get', ' get ', ',', 'bogus', 'normal',
	'recovery', 'none', 'token', 'content');
my @int = ('NULL', map { lit($_) }
	  qw(0 -1 1 2 1000 1001 10000 10001 2147483647 -2147483648));
# Besides numbers: data tokens made in the same statement, by a nested put
# (the data of a content-deduplicated queue) and by a nested get, and the
# session's last token, left by the call before (rolled back).
my @bigint = ('NULL', map({ lit($_) } (
		qw(0 -1 1 2 3), @id{qw(leased ready delayed dead dedup ileased)},
		$id{receipt}, $id{ireceipt},
		qw(2147483648 9223372036854775807 -9223372036854775808))),
	q{(SELECT token FROM rmsg.put_with_token('fz_dedup', convert_to(repeat('d', 3000), 'UTF8')))},
	q{(SELECT data_token FROM rmsg.get('fz_q'))}, q{rmsg.last_data_token()});
my @interval = ('NULL', map { lit($_) } (
		'0', '-1 second', '1 microsecond', '0.1 seconds', '1 hour',
		'300000 years', '178000000 years', '-178000000 years',
		'2562047788 hours', '2147483647 days 2147483647 months',
		'-2147483648 days', '1 month -30 days', 'infinity'));
# A wait blocks when nothing is ready: no candidate longer than 0.1 s but
# those beyond the timestamp range, which must be refused at once.
my @wait = grep { $_ ne lit('1 hour') } @interval;
my $mb2 = q{convert_to(repeat('a', 2097152), 'UTF8')};
my @bytea = ('NULL', lit(''), lit('\x00'), lit('x'), lit('\xdeadbeef'),
	q{convert_to(repeat('b', 2001), 'UTF8')},
	q{convert_to(repeat('c', 1048577), 'UTF8')}, $mb2);
my @jsonb = ('NULL', map({ lit($_) } ('null', '[]', '1', '{}', '{"a":1}', '"s"')),
	q{(repeat('[', 5000) || repeat(']', 5000))::jsonb},
	q{jsonb_build_object('k', repeat('x', 2097152))});
my @bytea_array = ('NULL', lit('{}'), lit('{NULL}'), q{ARRAY['x'::bytea]},
	lit('{{"\\\\x01"},{"\\\\x02"}}'), lit('[0:1]={"\\\\x01","\\\\x02"}'),
	q{ARRAY['', NULL]::bytea[]}, "ARRAY[$mb2]", "ARRAY['x'::bytea, $mb2]",
	q{array_fill('x'::bytea, ARRAY[10001])});
my @bigint_array = ('NULL', lit('{}'), lit('{NULL}'), lit('{{1},{2}}'),
	lit("[0:0]={$id{leased}}"), "ARRAY[$id{leased}]::bigint[]",
	"ARRAY[$id{receipt}]::bigint[]",
	"ARRAY[$id{leased}, $id{leased}]::bigint[]",
	"ARRAY[$id{ready}, $id{delayed}, $id{dead}, 0, -1, 9223372036854775807]::bigint[]",
	q{ARRAY(SELECT generate_series(1, 100001))::bigint[]});
my @text_array = ('NULL', lit('{}'), lit('{NULL}'), lit('{{fz_q},{fz_dlq}}'),
	q{ARRAY['fz_q']}, q{ARRAY['fz_q', 'fz_q']}, q{ARRAY['fz_q', NULL]},
	q{ARRAY['nope']}, q{ARRAY['fz_q', 'nope']}, q{ARRAY['']}, "ARRAY['" . ('a' x 64) . "']",
	lit('[0:0]={fz_q}'), q{array_fill('fz_q'::text, ARRAY[10001])});
my @regprocedure = ('NULL', map({ lit($_) } (
		'pg_catalog.now()', 'pg_catalog.length(bytea)',
		'public.fz_handler(bytea)', 'public.fz_ihandler(text,bytea)',
		'public.fz_proc(bytea)', 'pg_catalog.count("any")',
		'rmsg.drop_queue(text)', 'pg_catalog.pg_terminate_backend(integer,bigint)')),
	'0::oid', '4294967295::oid');
my @regrole = ('NULL', map({ lit($_) } qw(postgres pg_monitor fuzzer pg_database_owner)),
	'0::oid', '4294967295::oid');

my %candidates = (
	'text' => \@text,
	'integer' => \@int,
	'bigint' => \@bigint,
	'interval' => \@interval,
	'bytea' => \@bytea,
	'jsonb' => \@jsonb,
	'bytea[]' => \@bytea_array,
	'bigint[]' => \@bigint_array,
	'text[]' => \@text_array,
	'regprocedure' => \@regprocedure,
	'regrole' => \@regrole,
	'boolean' => [ 'NULL', 'true', 'false' ],
	'json' => [ map { "($_)::text" } @jsonb ],
	'smallint' => [ 'NULL', map { lit($_) } qw(0 -1 1 32767 -32768) ],
	'oid' => [ 'NULL', map { lit($_) } qw(0 1 4294967295) ],
	'timestamp with time zone' =>
	  [ 'NULL', map { lit($_) } ('now', 'infinity', '-infinity', '294276-12-31', '4713-01-01 BC') ],
	'integer[]' => [ 'NULL', lit('{}'), lit('{NULL}'), lit('{{1},{2}}'), lit('{2147483647}') ],
);

# The most extreme candidate per type, both ways, for the all-extreme calls.
my %extreme_max = (
	'text' => q{repeat('x', 10000)}, 'integer' => lit('2147483647'),
	'bigint' => lit('9223372036854775807'), 'interval' => lit('178000000 years'),
	'bytea' => $mb2, 'jsonb' => $jsonb[-1], 'bytea[]' => $bytea_array[-1],
	'bigint[]' => $bigint_array[-1], 'text[]' => $text_array[-1],
	'regprocedure' => '4294967295::oid', 'regrole' => '4294967295::oid');
my %extreme_min = (
	'text' => lit(''), 'integer' => lit('-2147483648'),
	'bigint' => lit('-9223372036854775808'), 'interval' => lit('-178000000 years'),
	'bytea' => lit(''), 'jsonb' => lit('null'), 'bytea[]' => lit('{}'),
	'bigint[]' => lit('{}'), 'text[]' => lit('{}'),
	'regprocedure' => '0::oid', 'regrole' => '0::oid');
my %extreme_odd = (
	'text' => lit('a' x 64), 'integer' => lit('0'), 'bigint' => lit('-1'),
	'interval' => lit('-1 second'), 'bytea' => lit('\x00'), 'jsonb' => lit('[]'),
	'bytea[]' => lit('{{"\\\\x01"},{"\\\\x02"}}'), 'bigint[]' => lit('{{1},{2}}'),
	'text[]' => lit('{NULL}'), 'regprocedure' => lit('pg_catalog.now()'),
	'regrole' => lit('pg_database_owner'));

# The value an argument takes while another one varies: what a correct
# call would pass, by the argument's name, else by its type.
sub sensible
{
	my ($fname, $arg, $type) = @_;
	my %by_name = (
		queue => lit('fz_q'),
		dead_letter_queue => lit('fz_dlq'),
		queues => q{ARRAY['fz_q', 'fz_dlq']},
		instance => lit('fz_i1'),
		instance_prefix => lit('fz_h-'),
		caller => lit('fz_caller'),
		callee => lit('fz_callee'),
		component => lit('fz_callee'),
		kind => lit('normal'),
		dedup => lit('content'),
		msg_id => lit($id{leased}),
		msg_ids => "ARRAY[$id{leased}]::bigint[]",
		receipt => lit($id{receipt}),
		receipts => "ARRAY[$id{receipt}]::bigint[]",
		call_id => lit('2'),
		data_token => 'NULL',
		max => lit('1'),
		max_deliveries => lit('5'),
		batch => lit('1'),
		visibility => lit('30 seconds'),
		delay => 'NULL',
		wait => 'NULL',
		headers => 'NULL',
		state => lit('{"s":1}'),
		payloads => q{ARRAY['x'::bytea]},
		role => lit('pg_monitor'),
		handler => lit($fname eq 'set_handler'
			? 'public.fz_ihandler(text,bytea)' : 'public.fz_handler(bytea)'),
		privilege => lit($fname =~ /instance/ ? 'receive' : $fname =~ /component/ ? 'use' : 'get'),
	);
	$by_name{privileges} = $by_name{privilege};
	return $by_name{$arg} if exists $by_name{$arg};
	my %by_type = (
		'text' => lit('x'), 'integer' => lit('1'), 'bigint' => lit('1'),
		'interval' => lit('1 second'), 'bytea' => lit('x'), 'jsonb' => lit('{"a":1}'),
		'bytea[]' => q{ARRAY['x'::bytea]}, 'bigint[]' => lit('{1}'),
		'text[]' => q{ARRAY['fz_q']}, 'regprocedure' => lit('public.fz_handler(bytea)'),
		'regrole' => lit('pg_monitor'), 'boolean' => 'true');
	return $by_type{$type} // 'NULL';
}

# An expression cast to the argument's type.
sub typed
{
	my ($expr, $type) = @_;
	return "${expr}::$type" if $expr =~ /^(?:NULL|'(?:[^']|'')*')$/;
	return "($expr)::$type";
}

# Which candidates are valid SQL: asked once for every (value, type).
my (%valid, @to_check);
for my $type (keys %candidates)
{
	push @to_check, map { typed($_, $type) } @{ $candidates{$type} };
}
push @to_check, typed($wait[$_], 'interval') for 0 .. $#wait;
{
	my %seen;
	@to_check = grep { !$seen{$_}++ } @to_check;
	my $values = join(",\n", map { "($_, " . lit($to_check[$_]) . ')' } 0 .. $#to_check);
	my $out = sql("SELECT i, public.fz_valid(e) FROM (VALUES $values) v(i, e) ORDER BY i");
	for (split /\n/, $out)
	{
		my ($i, $ok) = split /\|/;
		$valid{ $to_check[$i] } = $ok eq 't';
	}
}
my @invalid = grep { !$valid{$_} } sort keys %valid;
note('candidates left out as invalid SQL: ' . join(', ', @invalid));

#---------------------------------------------------------------------------
# The functions, from the catalog, and their calls.
#---------------------------------------------------------------------------
my @functions;
for my $line (split /\n/, sql(q{
	SELECT p.oid::regprocedure, quote_ident(n.nspname) || '.' || quote_ident(p.proname),
	       p.proname, p.prokind, p.provariadic <> 0,
	       array_to_string(ARRAY(SELECT format_type(t, NULL)
	                               FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY u(t, k)
	                              ORDER BY k), ';'),
	       array_to_string(ARRAY(SELECT coalesce(nm, '')
	                               FROM unnest(p.proargnames, p.proargmodes) WITH ORDINALITY u(nm, md, k)
	                              WHERE md IS NULL OR md IN ('i', 'b', 'v')
	                              ORDER BY k), ';', '')
	  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	 WHERE n.nspname = 'rmsg'
	 ORDER BY 1}))
{
	my ($sig, $qname, $name, $kind, $variadic, $types, $argnames) = split /\|/, $line, 7;
	my @types = length $types ? split(/;/, $types, -1) : ();
	my @args = split(/;/, $argnames, -1);
	$args[$_] //= '' for 0 .. $#types;
	push @functions, { sig => $sig, qname => $qname, name => $name, kind => $kind,
		variadic => $variadic eq 't', types => \@types, args => [ @args[0 .. $#types] ] };
}
cmp_ok(scalar @functions, '>=', 50, 'the catalog lists the functions of schema rmsg');

my @calls;    # { id, fn (index), sql }
my %unknown_types;
for my $fi (0 .. $#functions)
{
	my $f = $functions[$fi];
	my @types = @{ $f->{types} };
	my @base = map { sensible($f->{name}, $f->{args}[$_], $types[$_]) } 0 .. $#types;
	my (@arglists, %seen);
	push @arglists, [@base];
	for my $i (0 .. $#types)
	{
		my $c = $f->{args}[$i] eq 'wait' ? \@wait : $candidates{ $types[$i] };
		if (!$c)
		{
			$unknown_types{ $types[$i] } = 1;
			$c = ['NULL'];
		}
		my @values = @$c;
		push @values, @words if $types[$i] eq 'text' && $f->{args}[$i] =~ /^(privileges?|kind|dedup)$/;
		for my $v (@values)
		{
			next unless $valid{ typed($v, $types[$i]) } // 1;
			my @a = @base;
			$a[$i] = $v;
			push @arglists, \@a;
		}
	}
	# A data token stands for the payload: without the payload too.
	my ($payload) = grep { $f->{args}[$_] eq 'payload' } 0 .. $#types;
	my ($token) = grep { $f->{args}[$_] eq 'data_token' } 0 .. $#types;
	if (defined $payload && defined $token)
	{
		for my $v (@{ $candidates{ $types[$token] } })
		{
			my @a = @base;
			@a[ $payload, $token ] = ('NULL', $v);
			push @arglists, \@a;
		}
	}
	if (@types)
	{
		push @arglists, [ map { 'NULL' } @types ];
		for my $extreme (\%extreme_max, \%extreme_min, \%extreme_odd)
		{
			push @arglists, [ map { $extreme->{ $types[$_] } // 'NULL' } 0 .. $#types ];
		}
	}
	for my $a (@arglists)
	{
		my @typed = map { typed($a->[$_], $types[$_]) } 0 .. $#types;
		$typed[-1] = "VARIADIC $typed[-1]" if $f->{variadic};
		my $args = join(', ', @typed);
		my $sql = $f->{kind} eq 'p' ? "CALL $f->{qname}($args)"
		  : $f->{kind} =~ /[aw]/ ? "SELECT $f->{qname}($args)"
		  : "SELECT * FROM $f->{qname}($args)";
		next if $seen{$sql}++;
		push @calls, { id => scalar @calls + 1, fn => $fi, sql => $sql };
	}
}
note('argument types without candidates of their own (NULL only): ' . join(', ', sort keys %unknown_types))
  if %unknown_types;
note(sprintf('%d functions, %d calls per mode', scalar @functions, scalar @calls));

#---------------------------------------------------------------------------
# Running calls.  One psql per mode reads a generated script: per call, its
# SQLSTATE and error message (psql's variables) and the fingerprints go to
# fz_result, committed after each call so that they survive a crash.  When
# psql stops early (the server crashed or dropped the connection), the first
# call without a result is the culprit, and the script goes on after it.
#
# Styles:
#   savepoint, read_only: BEGIN [READ ONLY]; SAVEPOINT; call; ROLLBACK TO
#     SAVEPOINT; COMMIT.  fp_in: after a successful call, before its
#     rollback; fp_sub: after the rollback to the savepoint; fp_end: after
#     the transaction.
#   autocommit: the call alone.  fp_before and fp_end around it.
#   prepared: BEGIN; call; PREPARE TRANSACTION; ROLLBACK PREPARED (st2
#     holds the SQLSTATEs of these two), or COMMIT PREPARED with
#     prepared_commit.  fp_end after it.
#---------------------------------------------------------------------------

# psql variables st and em from the statement just run.
my $capture = "\\set st :SQLSTATE\n\\if :ERROR\n\\set em :LAST_ERROR_MESSAGE\n\\else\n\\set em ''\n\\endif\n";

sub script
{
	my ($mode, $style, $calls) = @_;
	my $s = "\\o /dev/null\n\\set VERBOSITY terse\n"
	  . "SET statement_timeout = '5s';\nSET lock_timeout = '5s';\n"
	  . "SET client_encoding = 'UTF8';\n\\set mode $mode\n";
	for my $c (@$calls)
	{
		$s .= "\\set st2 ''\n\\set fp_in ''\n\\set fp_sub ''\n\\set fp_before ''\n";
		if ($style eq 'autocommit')
		{
			$s .= "SELECT public.fz_fingerprint() AS fp_before \\gset\n$c->{sql};\n$capture";
		}
		elsif ($style =~ /^prepared/)
		{
			my $end = $style eq 'prepared_commit' ? 'COMMIT' : 'ROLLBACK';
			$s .= "BEGIN;\n$c->{sql};\n$capture"
			  . "\\if :ERROR\nROLLBACK;\n\\else\n"
			  . "PREPARE TRANSACTION 'fz_prepared';\n"
			  . "\\set st2 :SQLSTATE\n\\if :ERROR\n\\set em :LAST_ERROR_MESSAGE\n\\else\n"
			  . "$end PREPARED 'fz_prepared';\n"
			  . "\\set st2 :st2/:SQLSTATE\n\\if :ERROR\n\\set em :LAST_ERROR_MESSAGE\n\\endif\n"
			  . "\\endif\n\\endif\n";
		}
		else
		{
			my $begin = $style eq 'read_only' ? 'BEGIN READ ONLY' : 'BEGIN';
			$s .= "$begin;\nSAVEPOINT fz;\n$c->{sql};\n$capture"
			  . "\\if :ERROR\n\\else\nSELECT public.fz_fingerprint() AS fp_in \\gset\n\\endif\n"
			  . "ROLLBACK TO SAVEPOINT fz;\n"
			  . "SELECT public.fz_fingerprint() AS fp_sub \\gset\n"
			  . "COMMIT;\n";
		}
		$s .= "INSERT INTO public.fz_result (mode, id, st, st2, em, fp_in, fp_sub, fp_end, fp_before)"
		  . " VALUES (:'mode', $c->{id}, :'st', :'st2', :'em', :'fp_in', :'fp_sub',"
		  . " public.fz_fingerprint(), :'fp_before');\n";
	}
	return $s;
}

# Runs $calls in mode $mode; returns { id => result } where a result is a
# hash of the fz_result columns, or { st => 'lost' } for a call during
# which the connection was lost.
sub run_mode
{
	my ($mode, $style, $calls, $user) = @_;
	my %res;
	my @todo = @$calls;
	my $file = $node->basedir . "/fuzz_$mode.sql";
	my $stderr_file = $node->basedir . "/fuzz_$mode.stderr";
	while (@todo)
	{
		open my $fh, '>:raw', $file or die "$file: $!";
		print $fh script($mode, $style, \@todo);
		close $fh;
		my ($out, $err) = ('', '');
		my $connstr = $node->connstr('postgres') . ' application_name=rmsg_fuzz'
		  . ($user ? " user=$user" : '');
		my $h = IPC::Run::start(
			[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=0', '-d', $connstr, '-f', $file ],
			'>', \$out, '2>', \$err, IPC::Run::timeout(600));
		eval { $h->finish; };
		if ($@)
		{
			# Only a hang that statement_timeout could not end: stop it.
			$h->kill_kill;
			$node->safe_psql('postgres', q{
				SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				 WHERE application_name = 'rmsg_fuzz'});
		}
		open my $eh, '>>', $stderr_file or die "$stderr_file: $!";
		print $eh $err;
		close $eh;
		my $rows = $node->safe_psql('postgres', sprintf(q{
			SELECT id, st, st2, fp_in, fp_sub, fp_end, fp_before,
			       replace(replace(em, E'\n', ' '), '|', '/')
			  FROM public.fz_result WHERE mode = '%s' AND id >= %d},
			$mode, $todo[0]{id}));
		for (split /\n/, $rows)
		{
			my %r;
			@r{qw(id st st2 fp_in fp_sub fp_end fp_before em)} = split /\|/, $_, 8;
			$res{ $r{id} } = \%r;
		}
		shift @todo while @todo && $res{ $todo[0]{id} };
		last unless @todo;
		# The call that was running when psql stopped.
		my $lost = shift @todo;
		$res{ $lost->{id} } = { id => $lost->{id}, st => 'lost', st2 => '',
			em => 'the connection was lost: ' . (($err =~ /([^\n]*\n[^\n]*)\n*\z/) ? $1 : '') };
		$node->poll_query_until('postgres', 'SELECT true')
		  or die "the server does not come back after call $lost->{id}";
	}
	return \%res;
}

# Which tables (or instance dispositions) two fingerprints differ in.
sub fp_diff
{
	my ($a, $b) = @_;
	my %b = map { $_ => 1 } split ' ', $b // '';
	my @d = map { s/=.*//r } grep { !$b{$_} } sort split ' ', $a // '';
	return join(', ', @d) || 'changed';
}

# The calls that changed the state in savepoint mode (before their
# rollback), by id: writers, which a read-only transaction must refuse.
my %writer;

# Problems of call $id in mode $mode; %$base holds the mode's fingerprints
# with no call made.
sub problems
{
	my ($mode, $id, $r, $base) = @_;
	my @p;
	my $st = $r->{st};
	my @states = ($st, split m{/}, $r->{st2} // '');
	push @p, "internal error $_ ($r->{em})" for grep { /^XX/ } @states;
	push @p, "connection lost ($r->{em})" if $st eq 'lost';
	push @p, 'statement timeout: hangs' if grep { $_ eq '57014' } @states;
	push @p, "out of memory ($r->{em})" if grep { $_ eq '53200' } @states;
	push @p, 'no result' if $st eq 'missing';
	return @p if $st eq 'lost' || $st eq 'missing';
	push @p, "the mode cache disagrees with the table: $r->{fp_end}" if $r->{fp_end} =~ /!/;
	if ($mode eq 'autocommit')
	{
		push @p, 'state changed by the failed call: ' . fp_diff($r->{fp_end}, $r->{fp_before})
		  if $st ne '00000' && $r->{fp_end} ne $r->{fp_before};
	}
	elsif ($mode eq 'prepared')
	{
		push @p, "prepared, but ROLLBACK PREPARED failed ($r->{em})"
		  if $r->{st2} =~ m{^00000/(?!00000)};
		push @p, 'state changed after ROLLBACK PREPARED: ' . fp_diff($r->{fp_end}, $base->{fp_end})
		  if $r->{fp_end} ne $base->{fp_end};
	}
	elsif ($mode ne 'prepared_commit')
	{
		push @p, "writes in savepoint mode, but a read-only transaction gets $st ($r->{em}), not 25006"
		  if $mode eq 'read_only' && $writer{$id} && $st ne '25006';
		push @p, 'state changed inside a read-only transaction: ' . fp_diff($r->{fp_in}, $base->{fp_sub})
		  if $mode eq 'read_only' && $st eq '00000' && $r->{fp_in} ne $base->{fp_sub};
		push @p, 'state changed after rollback to savepoint: ' . fp_diff($r->{fp_sub}, $base->{fp_sub})
		  if $r->{fp_sub} ne $base->{fp_sub};
		push @p, 'state changed after the transaction: ' . fp_diff($r->{fp_end}, $base->{fp_end})
		  if $r->{fp_end} ne $base->{fp_end};
	}
	return @p;
}

# The fingerprints of a mode with no call made: a no-op run like the calls.
sub baseline
{
	my ($mode, $style, $user) = @_;
	my $res = run_mode("${mode}_base", $style, [ { id => 0, sql => 'SELECT 1' } ], $user);
	return $res->{0};
}

# Every call's outcome, for whoever reads the logs after a failure.
my $calls_log = "$PostgreSQL::Test::Utils::log_path/016_security_fuzz_calls.txt";
unlink $calls_log;

sub log_results
{
	my ($mode, $calls, $res) = @_;
	open my $fh, '>>:raw', $calls_log or die "$calls_log: $!";
	for my $c (@$calls)
	{
		my $r = $res->{ $c->{id} } // { st => 'missing', em => '' };
		my $sql = length($c->{sql}) > 300 ? substr($c->{sql}, 0, 300) . '...' : $c->{sql};
		my $em = length($r->{em} // '') > 300 ? substr($r->{em}, 0, 300) . '...' : $r->{em} // '';
		print $fh "$mode\t$c->{id}\t$r->{st}" . ($r->{st2} ? " $r->{st2}" : '') . "\t$sql\t$em\n";
	}
	close $fh;
	return;
}

#---------------------------------------------------------------------------
# Self check: the harness sees an internal error and a lost connection,
# and goes on after it.
#---------------------------------------------------------------------------
{
	my $base = baseline('selfcheck', 'savepoint');
	my $res = run_mode('selfcheck', 'savepoint', [
			{ id => 1, sql => 'SELECT public.fz_internal_error()' },
			{ id => 2, sql => 'SELECT pg_terminate_backend(pg_backend_pid())' },
			{ id => 3, sql => q{SELECT * FROM rmsg.put('fz_q', 'x'::text)} } ]);
	my @p = map { join('; ', problems('savepoint', $_, $res->{$_}, $base)) } 1 .. 3;
	is($p[0], 'internal error XX000 (fuzz self check)', 'self check: an internal error is reported');
	like($p[1], qr/^connection lost/, 'self check: a lost connection is reported');
	is($p[2], '', 'self check: the call after the lost connection ran, and changed nothing');
}

#---------------------------------------------------------------------------
# The modes.
#---------------------------------------------------------------------------
my %by_fn;
push @{ $by_fn{ $_->{fn} } }, $_ for @calls;

# One assertion per function: the problems of its calls in a mode.
sub report
{
	my ($mode, $calls, $res, $base) = @_;
	log_results($mode, $calls, $res);
	my %fn_calls;
	push @{ $fn_calls{ $_->{fn} } }, $_ for @$calls;
	for my $fi (sort { $functions[$a]{sig} cmp $functions[$b]{sig} } keys %fn_calls)
	{
		my (@p, %states);
		for my $c (@{ $fn_calls{$fi} })
		{
			my $r = $res->{ $c->{id} } // { st => 'missing', em => '' };
			$states{ $r->{st} }++;
			$states{$_}++ for grep { $_ ne '00000' } split m{/}, $r->{st2} // '';
			my $sql = length($c->{sql}) > 300 ? substr($c->{sql}, 0, 300) . '...' : $c->{sql};
			push @p, map { "$sql: $_" } problems($mode, $c->{id}, $r, $base);
		}
		my $n = @{ $fn_calls{$fi} };
		my $states = join(',', sort keys %states);
		is(join("\n", @p), '',
			"$mode: $functions[$fi]{sig}: $n calls, SQLSTATEs {$states}; no internal error, crash "
			  . 'or hang, state unchanged');
	}
	return;
}

my %mode_time;
my $t;

# The SQLSTATE of a call in a mode's results.
sub state_of
{
	my ($res, $c) = @_;
	return $res->{ $c->{id} } ? $res->{ $c->{id} }{st} : 'missing';
}

# savepoint: every call, as the superuser.
$t = time;
my $base = baseline('savepoint', 'savepoint');
my $res_sp = run_mode('savepoint', 'savepoint', \@calls);
report('savepoint', \@calls, $res_sp, $base);
%writer = map { $_->{id} => 1 }
  grep { my $r = $res_sp->{ $_->{id} }; $r && $r->{st} eq '00000' && $r->{fp_in} ne $base->{fp_sub} } @calls;
my %succeeded = map { $_->{id} => 1 } grep { state_of($res_sp, $_) eq '00000' } @calls;
cmp_ok(scalar keys %writer, '>=', 100, 'savepoint: the fingerprint sees what successful calls write');
my @never = map { $functions[$_]{sig} }
  grep { my $fi = $_; !grep { $succeeded{ $_->{id} } } @{ $by_fn{$fi} } } 0 .. $#functions;
note('functions none of whose calls succeeded as the superuser: ' . join(', ', @never)) if @never;
$mode_time{savepoint} = time - $t;

# autocommit: the calls that failed, each a top-level statement.
$t = time;
my @failed = grep { !$succeeded{ $_->{id} } } @calls;
my $res_ac = run_mode('autocommit', 'autocommit', \@failed);
report('autocommit', \@failed, $res_ac, undef);
my @ac_ok = grep { state_of($res_ac, $_) eq '00000' } @failed;
note("succeeded at top level after failing in a savepoint (their writes stay):\n"
	  . join("\n", map { $_->{sql} } @ac_ok)) if @ac_ok;
$mode_time{autocommit} = time - $t;

# prepared: the writers again, prepared and rolled back.
$t = time;
my @writers = grep { $writer{ $_->{id} } } @calls;
$base = baseline('prepared', 'prepared');
my $res_pr = run_mode('prepared', 'prepared', \@writers);
report('prepared', \@writers, $res_pr, $base);
is(sql('SELECT count(*) FROM pg_prepared_xacts'), '0', 'prepared: no prepared transaction is left');
$mode_time{prepared} = time - $t;

# fuzzer: every call, as a role with no right but put on fz_q2.
$t = time;
$base = baseline('fuzzer', 'savepoint', 'fuzzer');
my $res_fz = run_mode('fuzzer', 'savepoint', \@calls, 'fuzzer');
report('fuzzer', \@calls, $res_fz, $base);
my @fz_writes = grep {
	my $r = $res_fz->{ $_->{id} };
	$r && $r->{st} eq '00000' && $r->{fp_in} ne $base->{fp_sub}
} @calls;
note("calls that changed the state as the fuzzer role (rolled back):\n"
	  . join("\n", map { $_->{sql} . ': ' . fp_diff($res_fz->{ $_->{id} }{fp_in}, $base->{fp_sub}) } @fz_writes))
  if @fz_writes;
$mode_time{fuzzer} = time - $t;

# read_only: every call in BEGIN READ ONLY.  A writer must say 25006.
$t = time;
$base = baseline('read_only', 'read_only');
my $res_ro = run_mode('read_only', 'read_only', \@calls);
report('read_only', \@calls, $res_ro, $base);
$mode_time{read_only} = time - $t;

# prepared_commit, last as it changes the state for good: the first
# writing call of each function (its sensible arguments, mostly) committed
# with COMMIT PREPARED, one after the other, the drops last so that the
# others find their objects.
$t = time;
my %first;
$first{ $_->{fn} } //= $_ for @writers;
my @commits = sort { ($a->{sql} =~ /\.drop_/) <=> ($b->{sql} =~ /\.drop_/) || $a->{id} <=> $b->{id} }
  values %first;
my $res_pc = run_mode('prepared_commit', 'prepared_commit', \@commits);
log_results('prepared_commit', \@commits, $res_pc);
is(join("\n", map {
			my $c = $_;
			map { "$c->{sql}: $_" }
			  problems('prepared_commit', $c->{id}, $res_pc->{ $c->{id} } // { st => 'missing', em => '' }, undef)
		} @commits), '',
	sprintf('prepared_commit: %d writers committed in two phases, SQLSTATEs {%s}; no internal error, '
		  . 'crash or hang, mode cache in step', scalar @commits,
		join(',', sort keys %{ { map { state_of($res_pc, $_) => 1 } @commits } })));
is(sql('SELECT count(*) FROM pg_prepared_xacts'), '0', 'prepared_commit: no prepared transaction is left');
$mode_time{prepared_commit} = time - $t;

#---------------------------------------------------------------------------
# The server never crashed: it still accepts connections, and its log
# shows no backend ended by a signal.
#---------------------------------------------------------------------------
is(sql('SELECT 1'), '1', 'the server accepts connections after the fuzzing');
my $log = slurp_file($node->logfile);
my @crashes = grep { /terminated by signal|was terminated by exception|PANIC:/ } split /\n/, $log;
is(join("\n", @crashes), '', 'no backend crashed during the fuzzing');

note(sprintf('%d functions, %d calls per mode (%d at top level, %d writers prepared); seconds: %s; total %.1f',
		scalar @functions, scalar @calls, scalar @failed, scalar @writers,
		join(', ', map { sprintf('%s %.1f', $_, $mode_time{$_}) } sort keys %mode_time),
		time - $t0));

$node->stop;
done_testing();
