use strict;
use warnings FATAL => 'all';

# Crash recovery of deduplicated logging: a real crash (immediate
# shutdown, no checkpoint at the end) while messages share payload rows by
# data token, put_many, forward and content dedup, with uncommitted puts,
# an uncommitted collection and pinned payload rows in flight.
#  1. committed sharing survives: every message reads back its exact bytes,
#     and the payload rows are exactly those the sharing implies;
#  2. uncommitted puts leave no message and no payload row behind;
#  3. an uncommitted collection deleted nothing, a committed one stays done;
#  4. data tokens do not survive the restart: NULL payload fails with 22023,
#     a payload given is written;
#  5. a payload row pinned by an open put is skipped by collect_payloads,
#     and the reference resolves once the put commits, also after the crash.

use Digest::MD5 qw(md5 md5_hex);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib "$FindBin::RealBin/../lib";
use RmsgSession;
use RmsgNode;

#---------------------------------------------------------------------------
# Data: pseudo-random bytes (raw md5 digests chained), so nothing
# compresses and every name has its own bytes.  The test knows each one's
# md5 and length without asking the server.
#---------------------------------------------------------------------------

my %data;
my %name_of_md5;

sub make_data
{
	my ($name, $len) = @_;
	my $d = '';
	my $i = 0;
	$d .= md5("$name-" . $i++) while length($d) < $len;
	$data{$name} = substr($d, 0, $len);
	$name_of_md5{ md5_hex($data{$name}) } = $name;
	return;
}

# 64 KiB: A (by token and forward), B (put_many), E (uncommitted put_many)
make_data($_, 65536) for qw(A B E);
make_data('C',  1024);    # inline size, shared: promoted to a payload row
make_data('D',  5000);    # content dedup
make_data('E2', 3000);    # uncommitted put_many after the checkpoint
make_data('F',  4000);    # orphan deleted by an uncommitted collection
make_data('G',  4000);    # orphan deleted by a committed collection
make_data('H',  6000);    # orphan re-referenced by a pinned put
make_data('J',  3500);    # orphan pinned by a put open at the crash
make_data('Q',  2500);    # after the crash: a token whose data is collected

sub descr { my ($name) = @_; return md5_hex($data{$name}) . ':' . length($data{$name}); }

# An SQL expression for the bytes of data $name (from a committed table).
sub src { my ($name) = @_; return "(SELECT data FROM src_data WHERE name = '$name')"; }

# Replaces the md5s of known data by their names, for readable diffs.
sub named
{
	my ($text) = @_;
	$text =~ s/\b([0-9a-f]{32})\b/exists $name_of_md5{$1} ? $name_of_md5{$1} : $1/ge;
	return join("\n", sort grep { $_ ne '' } split /\n/, $text);
}

#---------------------------------------------------------------------------
# The node: default inline limit (2000 bytes), durable commits.
#---------------------------------------------------------------------------

# No background worker: its maintenance would collect payloads and
# dead-letter messages on a schedule of its own, where this file checks what
# the SQL functions do by themselves (011 and 012 test the worker).
my $node = new_node('dedup', workers => 0, conf => "synchronous_commit = on");

sub sql { my ($q) = @_; return $node->safe_psql('postgres', $q); }

is(sql('SHOW rmsg.inline_payload_max'), '2000B', 'default inline limit of 2000 bytes');

my @s1_queues = qw(a_src a_tok1 a_tok2 a_tok3 a_fwd1 a_fwd2
  b_many1 b_many2 b_many3 b_many4 b_tok
  c_src c_tok1 c_tok2 c_fwd c_none
  d_c1 d_c2 d_plain);
my @other_queues = qw(u_m1 u_m2 u_m3 u_t1 u_t2 u_f1 u_f2 u_f3 u_j u_jsrc
  g_q f_q h_src h_tok last after q_src q_tok);

sql("CREATE EXTENSION recoverable_msg");
for my $q (@s1_queues, @other_queues)
{
	my $dedup =
	    $q =~ /^d_c/   ? 'content'
	  : $q eq 'c_none' ? 'none'
	  :                  'token';
	sql("SELECT rmsg.create_queue('$q', dedup => '$dedup')");
}
sql("CREATE TABLE src_data (name text PRIMARY KEY, data bytea NOT NULL)");
for my $name (sort keys %data)
{
	sql("INSERT INTO src_data VALUES ('$name', '\\x"
		  . unpack('H*', $data{$name}) . "')");
}
is( sql("SELECT string_agg(name || ':' || md5(data) || ':' || length(data), ',' ORDER BY name) FROM src_data"),
	join(',', map { "$_:" . descr($_) } sort keys %data),
	'the source data arrived intact');

#---------------------------------------------------------------------------
# Shared queries
#---------------------------------------------------------------------------

my $s1_list = join(', ', map { "'$_'" } @s1_queues);

# Per data: messages, how many inline, how many distinct payload rows.
my $layout_sql = qq{
	SELECT md5(coalesce(m.inline_data, p.data)) || ':' || count(*) || ':'
	       || count(m.inline_data) || ':' || count(DISTINCT m.payload_id)
	  FROM rmsg.message m
	  JOIN rmsg.queue q USING (queue_id)
	  LEFT JOIN rmsg.payload p USING (payload_id)
	 WHERE q.name IN ($s1_list)
	 GROUP BY md5(coalesce(m.inline_data, p.data))};
my $layout_expected = named(join("\n",
		md5_hex($data{A}) . ':6:0:1',
		md5_hex($data{B}) . ':5:0:1',
		md5_hex($data{C}) . ':5:2:1',
		md5_hex($data{D}) . ':3:0:2'));

# Payload rows per data.
my $rows_sql = "SELECT md5(data) || ':' || count(*) FROM rmsg.payload GROUP BY md5(data)";
sub rows_expected
{
	my (%n) = @_;
	return named(join("\n", map { md5_hex($data{$_}) . ":$n{$_}" } keys %n));
}

my $refs_sql = q{
	WITH r AS (SELECT payload_id FROM rmsg.message WHERE payload_id IS NOT NULL
	           UNION ALL
	           SELECT payload_id FROM rmsg.dead_message WHERE payload_id IS NOT NULL)};
my $dangling_sql = "$refs_sql SELECT count(*) FROM r WHERE NOT EXISTS
	(SELECT 1 FROM rmsg.payload p WHERE p.payload_id = r.payload_id)";
my $orphans_sql = "$refs_sql SELECT string_agg(md5(p.data), E'\\n') FROM rmsg.payload p
	WHERE NOT EXISTS (SELECT 1 FROM r WHERE r.payload_id = p.payload_id)";

#---------------------------------------------------------------------------
# 1. Committed sharing, in one session (tokens are the session's)
#---------------------------------------------------------------------------

my $pre = session_open($node, 'pre');
my %id;    # queue -> msg_id of its section 1 message

sub pre_put
{
	my ($queue, $sql) = @_;
	my $out = session_query($pre, $sql, "put to $queue");
	like($out, qr/^\d+$/, "put to $queue returned a msg_id");
	$id{$queue} = $out;
	return;
}

# A put that hands back its data token in the same statement.
sub put_with_token
{
	my ($session, $queue, $payload, $what) = @_;
	my ($msg_id, $token) = split / /,
	  session_query($session,
		"SELECT msg_id || ' ' || token FROM rmsg.put_with_token('$queue', $payload);", $what);
	return ($msg_id, $token);
}

# A: put once, then by token to 3 queues, forwarded to 2.
my $tokA;
($id{a_src}, $tokA) = put_with_token($pre, 'a_src', src('A'), 'put to a_src');
like($id{a_src}, qr/^\d+$/, 'put to a_src returned a msg_id');
like($tokA, qr/^\d+$/, 'the put of A handed out a token');
pre_put("a_tok$_", "SELECT rmsg.put('a_tok$_', NULL::bytea, data_token => $tokA);") for 1 .. 3;
pre_put("a_fwd$_", "SELECT rmsg.forward($id{a_src}, 'a_fwd$_');") for 1 .. 2;

# B: put_many to 4 queues, then by the token put_many handed out, which
# rmsg.last_data_token() names in the same transaction.
session_query($pre, 'BEGIN;', 'begin B');
my @many = split /\n/,
  session_query($pre,
	"SELECT * FROM rmsg.put_many(ARRAY['b_many1', 'b_many2', 'b_many3', 'b_many4'], "
	  . src('B') . q{, '{"fan": "many"}');}, 'put_many of B');
is(scalar @many, 4, 'put_many returned 4 msg_ids');
@id{qw(b_many1 b_many2 b_many3 b_many4)} = @many;
pre_put('b_tok', "SELECT rmsg.put('b_tok', NULL::bytea, data_token => rmsg.last_data_token());");
session_query($pre, 'COMMIT;', 'commit B');

# C: 1 KiB, stored inline; its first share moves it to a payload row, later
# shares (token, forward) reference that row; a 'none' queue gets a copy.
my $tokC;
($id{c_src}, $tokC) = put_with_token($pre, 'c_src', src('C'), 'put to c_src');
like($id{c_src}, qr/^\d+$/, 'put to c_src returned a msg_id');
like($tokC, qr/^\d+$/, 'the put of C handed out a token');
pre_put('c_tok1', "SELECT rmsg.put('c_tok1', NULL::bytea, data_token => $tokC);");
pre_put('c_tok2', "SELECT rmsg.put('c_tok2', NULL::bytea, data_token => $tokC);");
pre_put('c_fwd', "SELECT rmsg.forward($id{c_src}, 'c_fwd');");
pre_put('c_none', "SELECT rmsg.put('c_none', NULL::bytea, data_token => $tokC);");

# D: content dedup finds the data d_c1 logged; a token queue does not.
pre_put('d_c1', "SELECT rmsg.put('d_c1', " . src('D') . ");");
pre_put('d_c2', "SELECT rmsg.put('d_c2', " . src('D') . ");");
pre_put('d_plain', "SELECT rmsg.put('d_plain', " . src('D') . ");");

is(named(sql($layout_sql)), $layout_expected,
	'before the crash: A in 1 row x6, B in 1 row x5, C inline x2 + 1 row x3, D in 2 rows');
is(named(sql($rows_sql)), rows_expected(A => 1, B => 1, C => 1, D => 2),
	'before the crash: one payload row per shared data, two for D');
is(sql(qq{SELECT string_agg(q.name || ':' || (m.inline_data IS NOT NULL), ',' ORDER BY q.name)
	FROM rmsg.message m JOIN rmsg.queue q USING (queue_id) WHERE q.name LIKE 'c\\_%'}),
	'c_fwd:false,c_none:true,c_src:true,c_tok1:false,c_tok2:false',
	'C stays inline in c_src and c_none, the shares reference the promoted row');

my ($pid_a, $pid_b, $pid_c) = map {
	sql("SELECT payload_id FROM rmsg.message WHERE msg_id = $id{$_}")
} qw(a_tok1 b_many1 c_tok1);
like($pid_a, qr/^\d+$/, 'A has a payload row');

my $a = 65536;
is( sql(q{SELECT puts_written || ':' || puts_referenced || ':' || payload_bytes_written
	  || ':' || payload_bytes_referenced || ':' || payload_rows FROM rmsg.log_stats}),
	join(':', 7, 12, 2 * $a + 3 * 1024 + 2 * 5000, 9 * $a + 2 * 1024 + 5000, 5),
	'log_stats: 7 puts written, 12 referenced, bytes to match, 5 payload rows');
my %qbytes = (
	a_src => "$a:0", a_tok1 => "0:$a", a_tok2 => "0:$a", a_tok3 => "0:$a",
	a_fwd1 => "0:$a", a_fwd2 => "0:$a",
	b_many1 => "$a:0", b_many2 => "0:$a", b_many3 => "0:$a", b_many4 => "0:$a",
	b_tok => "0:$a",
	c_src => '1024:0', c_tok1 => '1024:0', c_tok2 => '0:1024', c_fwd => '0:1024',
	c_none => '1024:0',
	d_c1 => '5000:0', d_c2 => '0:5000', d_plain => '5000:0');
is( sql("SELECT string_agg(queue || ':' || bytes_written || ':' || bytes_referenced, ','
	ORDER BY queue) FROM rmsg.queues WHERE queue IN ($s1_list)"),
	join(',', map { "$_:$qbytes{$_}" } sort keys %qbytes),
	'rmsg.queues: bytes written and referenced per queue');
my $stats_since = sql('SELECT stats_since FROM rmsg.log_stats');

#---------------------------------------------------------------------------
# 2. Uncommitted fan-outs, open at the crash (session u1).  J is committed
#    first and its message acked, so that u1's put of it by token pins an
#    unreferenced row.
#---------------------------------------------------------------------------

my $u1 = session_open($node, 'uncommitted_puts');
my ($jsrc, $tokJ) = put_with_token($u1, 'u_jsrc', src('J'), 'u1 put J');
my $pid_j = sql("SELECT payload_id FROM rmsg.message WHERE msg_id = $jsrc");
is(sql("SELECT rmsg.ack($jsrc)"), 't', 'the message of J acked: its row is unreferenced');

my @uncommitted;
session_query($u1, 'BEGIN;', 'u1 begin');
push @uncommitted, split /\n/,
  session_query($u1,
	"SELECT * FROM rmsg.put_many(ARRAY['u_m1', 'u_m2', 'u_m3'], " . src('E') . ");",
	'u1 put_many of E');
my $tokE = session_query($u1, 'SELECT rmsg.last_data_token();', 'token of E');
push @uncommitted,
  session_query($u1, "SELECT rmsg.put('u_t1', NULL::bytea, data_token => $tokE);",
	'u1 put by token of E');
push @uncommitted,
  session_query($u1, "SELECT rmsg.forward($id{a_src}, 'u_f1');", 'u1 forward of A');
push @uncommitted,
  session_query($u1, "SELECT rmsg.forward($id{c_src}, 'u_f2');", 'u1 forward of C');
push @uncommitted,
  session_query($u1, "SELECT rmsg.forward($id{c_src}, 'u_f3');", 'u1 forward of C again');
push @uncommitted,
  session_query($u1, "SELECT rmsg.put('d_c1', " . src('D') . ");", 'u1 put of D to a content queue');
push @uncommitted,
  session_query($u1, "SELECT rmsg.put('u_j', NULL::bytea, data_token => $tokJ);",
	'u1 put by token of J');
is(scalar(grep { /^\d+$/ } @uncommitted), 9, 'u1 has 9 uncommitted messages');
my $pid_d1 = sql("SELECT payload_id FROM rmsg.message WHERE msg_id = $id{d_c1}");
my $u1_layout = session_query($u1,
	"SELECT string_agg(q.name || ':' || coalesce(m.payload_id::text, 'inline'), ',' ORDER BY m.msg_id)
	   FROM rmsg.message m JOIN rmsg.queue q USING (queue_id)
	  WHERE m.msg_id IN (" . join(', ', @uncommitted) . ");", 'u1 layout');
my ($pid_e) = $u1_layout =~ /^u_m1:(\d+),/;
my ($pid_c2) = $u1_layout =~ /u_f2:(\d+)/;
$pid_e //= 'none';
$pid_c2 //= 'none';
is($u1_layout,
	"u_m1:$pid_e,u_m2:$pid_e,u_m3:$pid_e,u_t1:$pid_e,u_f1:$pid_a,u_f2:$pid_c2,"
	  . "u_f3:$pid_c2,d_c1:$pid_d1,u_j:$pid_j",
	'u1 references: E written once, A by forward, C promoted once, D by content, J by token');
ok($pid_c2 ne $pid_c, 'u1 promoted C to a row of its own (its session never shared it)');
is(named(session_query($u1, "$rows_sql;", 'u1 payload rows')),
	rows_expected(A => 1, B => 1, C => 2, D => 2, E => 1, J => 1),
	'u1 sees the rows it wrote: E and a second C');

# The pages holding u1's tuples go to disk; redo replays what comes after.
sql('CHECKPOINT');

push @uncommitted,
  session_query($u1, "SELECT rmsg.put('u_t2', NULL::bytea, data_token => $tokE);",
	'u1 put by token of E after the checkpoint');
push @uncommitted, split /\n/,
  session_query($u1, "SELECT * FROM rmsg.put_many(ARRAY['u_m1', 'a_tok1'], " . src('E2') . ");",
	'u1 put_many of E2 after the checkpoint, one to a committed queue');
is(scalar(grep { /^\d+$/ } @uncommitted), 12, 'u1 has 12 uncommitted messages');

#---------------------------------------------------------------------------
# 3a. A committed collection, after the checkpoint (redo replays it).
#---------------------------------------------------------------------------

my $gid = sql("SELECT rmsg.put('g_q', " . src('G') . ")");
my $pid_g = sql("SELECT payload_id FROM rmsg.message WHERE msg_id = $gid");
like($pid_g, qr/^\d+$/, 'G has a payload row');
is(sql("SELECT rmsg.ack($gid)"), 't', 'the message of G acked');
is(sql('SELECT rmsg.collect_payloads()'), '1',
	'committed collection removes G only (J is pinned by u1, u1 rows are not visible)');
is(sql("SELECT count(*) FROM rmsg.payload WHERE payload_id = $pid_g"), '0', 'G row gone');

#---------------------------------------------------------------------------
# 5. A put pins a row no message references while collect_payloads runs.
#---------------------------------------------------------------------------

my $p = session_open($node, 'pinning_put');
my ($hid, $tokH) = put_with_token($p, 'h_src', src('H'), 'put H');
my $pid_h = sql("SELECT payload_id FROM rmsg.message WHERE msg_id = $hid");
like($pid_h, qr/^\d+$/, 'H has a payload row');
is(sql("SELECT rmsg.ack($hid)"), 't', 'the message of H acked: its row is unreferenced');
session_query($p, 'BEGIN;', 'pinning put begin');
my $htok = session_query($p, "SELECT rmsg.put('h_tok', NULL::bytea, data_token => $tokH);",
	'put by token of H, left open');
is( session_query($p, "SELECT payload_id FROM rmsg.message WHERE msg_id = $htok;", 'h_tok ref'),
	$pid_h, 'the open put references the row of H');
is(sql('SELECT rmsg.collect_payloads()'), '0',
	'collect_payloads while the put is open removes nothing (H and J are pinned)');
is(sql("SELECT count(*) FROM rmsg.payload WHERE payload_id = $pid_h"), '1',
	'the pinned row of H is still there');
session_query($p, 'COMMIT;', 'pinning put commit');
is( sql("SELECT m.payload_id || ':' || md5(p.data) FROM rmsg.message m
		  JOIN rmsg.payload p USING (payload_id) WHERE m.msg_id = $htok"),
	"$pid_h:" . md5_hex($data{H}), 'after the commit the reference of h_tok resolves to H');
is(sql('SELECT rmsg.collect_payloads()'), '0', 'a later collection keeps the referenced row');

#---------------------------------------------------------------------------
# 3b. A collection open at the crash (session u2).
#---------------------------------------------------------------------------

my $fid = sql("SELECT rmsg.put('f_q', " . src('F') . ")");
my $pid_f = sql("SELECT payload_id FROM rmsg.message WHERE msg_id = $fid");
like($pid_f, qr/^\d+$/, 'F has a payload row');
is(sql("SELECT rmsg.ack($fid)"), 't', 'the message of F acked');
my $u2 = session_open($node, 'uncommitted_collect');
session_query($u2, 'BEGIN;', 'u2 begin');
is(session_query($u2, 'SELECT rmsg.collect_payloads();', 'u2 collect'), '1',
	'the uncommitted collection removes F');
is(session_query($u2, "SELECT count(*) FROM rmsg.payload WHERE payload_id = $pid_f;", 'u2 F'),
	'0', 'the uncommitted collection sees F gone');

# A durable commit after all of it flushes the WAL of the open transactions.
my $last = sql("SELECT rmsg.put('last', 'flush'::text)");
is(named(sql($rows_sql)), rows_expected(A => 1, B => 1, C => 1, D => 2, F => 1, H => 1, J => 1),
	'just before the crash the committed payload rows are A B C D D F H J');

#---------------------------------------------------------------------------
# Crash
#---------------------------------------------------------------------------

$node->stop('immediate');
session_kill($_) for ($pre, $u1, $u2, $p);
my $log_offset = -s $node->logfile;
$node->start;
ok($node->log_contains(qr/not properly shut down; automatic recovery in progress/, $log_offset),
	'the server went through crash recovery');

#--- counters are in shared memory: they start again -----------------------
is( sql(q{SELECT puts_written || ':' || puts_referenced || ':' || payload_bytes_written
	  || ':' || payload_bytes_referenced || ':' || payloads_collected FROM rmsg.log_stats}),
	'0:0:0:0:0', 'log_stats counters start from zero after the restart');
is(sql("SELECT stats_since > '$stats_since' FROM rmsg.log_stats"), 't',
	'stats_since is the restart');
is(sql("SELECT count(*) FROM rmsg.queues WHERE coalesce(bytes_written, 0) + coalesce(bytes_referenced, 0) > 0"),
	'0', 'per-queue byte counters start from zero');

#--- 1. committed sharing survived ------------------------------------------
my $s1_ids = join(', ', map { $id{$_} } @s1_queues);
is(sql("SELECT count(*) FROM rmsg.message WHERE msg_id IN ($s1_ids)"),
	scalar @s1_queues, 'all 19 committed messages of the fan-outs are there');
is(named(sql($layout_sql)), $layout_expected,
	'after the crash: A in 1 row x6, B in 1 row x5, C inline x2 + 1 row x3, D in 2 rows');
is(sql("SELECT payload_id FROM rmsg.message WHERE msg_id = $id{$_->[0]}"), $_->[1],
	"$_->[0] still references the same payload row")
  for ([ 'a_fwd2', $pid_a ], [ 'b_tok', $pid_b ], [ 'c_fwd', $pid_c ]);
is(sql($dangling_sql), '0', 'every payload reference resolves after the crash');

#--- 2. nothing of the uncommitted fan-outs ---------------------------------
my $u_ids = join(', ', @uncommitted);
is( sql("SELECT (SELECT count(*) FROM rmsg.message WHERE msg_id IN ($u_ids))
	      + (SELECT count(*) FROM rmsg.dead_message WHERE msg_id IN ($u_ids))"),
	'0', 'none of the 12 uncommitted messages exists');
is( sql("SELECT coalesce(sum(ready + in_flight + delayed + dead), 0) FROM rmsg.queues
	      WHERE queue IN ('u_m1', 'u_m2', 'u_m3', 'u_t1', 'u_t2', 'u_f1', 'u_f2', 'u_f3', 'u_j')"),
	'0', 'the queues only u1 put to are empty');

#--- 3. the uncommitted collection deleted nothing, the committed one did ---
is(sql("SELECT md5(data) FROM rmsg.payload WHERE payload_id = $pid_f"), md5_hex($data{F}),
	'F, deleted by the collection open at the crash, is still there');
is(sql("SELECT count(*) FROM rmsg.payload WHERE payload_id = $pid_g OR md5(data) = '"
	  . md5_hex($data{G}) . "'"), '0', 'G, collected by a committed collection, stays gone');

#--- 5. the pinned reference survived ---------------------------------------
is( sql("SELECT m.payload_id || ':' || md5(p.data) FROM rmsg.message m
		  JOIN rmsg.payload p USING (payload_id) WHERE m.msg_id = $htok"),
	"$pid_h:" . md5_hex($data{H}), 'after the crash the reference of h_tok still resolves to H');

#--- payload rows: exactly the committed ones; collection removes F and J ---
is(named(sql($rows_sql)), rows_expected(A => 1, B => 1, C => 1, D => 2, F => 1, H => 1, J => 1),
	'payload rows after the crash: A B C D D F H J, none of E, E2 or the second C');
is(named(sql($orphans_sql)), named(join("\n", md5_hex($data{F}), md5_hex($data{J}))),
	'the unreferenced rows are F and J');
is(sql('SELECT rmsg.collect_payloads()'), '2', 'collect_payloads removes exactly those two');
is(named(sql($rows_sql)), rows_expected(A => 1, B => 1, C => 1, D => 2, H => 1),
	'after the collection: A B C D D H');
is(sql($dangling_sql), '0', 'every payload reference still resolves');
is(sql('SELECT payloads_collected FROM rmsg.log_stats'), '2', 'log_stats counts the 2 collected');

#--- every message reads back its exact bytes through rmsg.get --------------
my %content = (
	(map { $_ => 'A' } qw(a_src a_tok1 a_tok2 a_tok3 a_fwd1 a_fwd2)),
	(map { $_ => 'B' } qw(b_many1 b_many2 b_many3 b_many4 b_tok)),
	(map { $_ => 'C' } qw(c_src c_tok1 c_tok2 c_fwd c_none)),
	(map { $_ => 'D' } qw(d_c1 d_c2 d_plain)),
	h_tok => 'H');
my %hdr = map { $_ => '{"fan": "many"}' } qw(b_many1 b_many2 b_many3 b_many4);
my (@got, @want);
for my $q (sort keys %content)
{
	push @got, "$q=" . sql("SELECT string_agg(msg_id || ':' || md5(payload) || ':' || length(payload)
		|| ':' || coalesce(headers::text, ''), ';')
		FROM rmsg.get('$q', max => 100, visibility => '10 minutes')");
	push @want, "$q=" . ($q eq 'h_tok' ? $htok : $id{$q}) . ':' . descr($content{$q}) . ':'
	  . ($hdr{$q} // '');
}
is(named(join("\n", @got)), named(join("\n", @want)),
	'rmsg.get returns each committed message once, with exactly its bytes (and headers)');

#--- 4. tokens do not survive the restart -----------------------------------
my $t = session_open($node, 'after_restart');
is(session_sqlstate($t, "SELECT rmsg.put('after', NULL::bytea, data_token => $tokA);"),
	'22023', 'the pre-crash token of A with a NULL payload fails with 22023');
is(session_sqlstate($t, "SELECT rmsg.put('after', NULL::bytea, data_token => $tokC);"),
	'22023', 'the pre-crash token of C with a NULL payload fails with 22023');
my $after_a = session_query($t, "SELECT rmsg.put('after', " . src('A') . ", data_token => $tokA);",
	'the pre-crash token of A with the payload');
my $after_c = session_query($t, "SELECT rmsg.put('after', " . src('C') . ", data_token => $tokC);",
	'the pre-crash token of C with the payload');
like($after_a, qr/^\d+$/, 'with the payload given the put of A succeeds');
like($after_c, qr/^\d+$/, 'with the payload given the put of C succeeds');
is( sql("SELECT (payload_id IS NOT NULL AND payload_id <> $pid_a) || ':' || (inline_data IS NULL)
		FROM rmsg.message WHERE msg_id = $after_a"),
	'true:true', 'A was written to a new payload row');
is(sql("SELECT (payload_id IS NULL) || ':' || md5(inline_data) FROM rmsg.message WHERE msg_id = $after_c"),
	'true:' . md5_hex($data{C}), 'C was written inline');
is(named(sql($rows_sql)), rows_expected(A => 2, B => 1, C => 1, D => 2, H => 1),
	'a second payload row of A, nothing more');
is(sql('SELECT puts_written || \':\' || puts_referenced FROM rmsg.log_stats'), '2:0',
	'log_stats: both fallback puts were written, none referenced');
is( named(sql("SELECT msg_id || ':' || md5(payload) || ':' || length(payload)
		FROM rmsg.get('after', max => 10, visibility => '10 minutes')")),
	named("$after_a:" . descr('A') . "\n$after_c:" . descr('C')),
	'the fallback messages read back their exact bytes');

# Control: a token of this session whose data was collected fails with 55000.
my ($qsrc, $tokQ) = put_with_token($t, 'q_src', src('Q'), 'put Q');
is(session_query($t, "SELECT rmsg.ack($qsrc);", 'ack Q'), 't', 'the message of Q acked');
is(session_query($t, 'SELECT rmsg.collect_payloads();', 'collect Q'), '1', 'the row of Q collected');
is(session_sqlstate($t, "SELECT rmsg.put('q_tok', NULL::bytea, data_token => $tokQ);"),
	'55000', 'a live token whose data was collected fails with 55000, not 22023');
session_kill($t);

$node->stop;
done_testing();
