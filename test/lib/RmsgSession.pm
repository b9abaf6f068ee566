# Background psql sessions for the TAP tests: statements are sent without
# waiting and their output is collected later, so a test can hold a
# transaction open across a crash or leave a get waiting while another
# session commits.  Each statement is followed by a marker echoed on stdout
# and stderr, so we know when it is done and what it printed.

package RmsgSession;

use strict;
use warnings FATAL => 'all';

use Exporter 'import';
use IPC::Run;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(session_open session_send session_wait session_query session_sqlstate session_kill);


# Opens a session named $name (its application_name) to database postgres
# of $node, or, when $connstr is given, to that connection string instead
# (a pooler in front of the node, say).
sub session_open
{
	my ($node, $name, $connstr) = @_;
	my $s = { in => '', out => '', err => '', n => 0, name => $name };
	$connstr //= $node->connstr('postgres');
	$s->{h} = IPC::Run::start(
		[
			'psql', '-XAtq', '-v', 'ON_ERROR_STOP=0',
			'-v', 'VERBOSITY=verbose',
			'-d', "$connstr application_name=$name"
		],
		'<', \$s->{in}, '>', \$s->{out}, '2>', \$s->{err});
	return $s;
}

# Queues SQL (which must end with ';'); returns the statement's number.
sub session_send
{
	my ($s, $sql) = @_;
	my $n = ++$s->{n};
	$s->{in} .= "$sql\n\\echo __done_$n\n\\warn __done_$n\n";
	eval { $s->{h}->pump_nb; };
	return $n;
}

# Waits up to $timeout seconds for statement $n; returns (stdout, stderr) of
# everything up to it, or () on timeout.
sub session_wait
{
	my ($s, $n, $timeout) = @_;
	my $deadline = time + ($timeout // 60);
	while ($s->{out} !~ /__done_$n\n/ || $s->{err} !~ /__done_$n\n/)
	{
		return () if time > $deadline;
		eval { $s->{h}->pump_nb; };
		usleep(5_000);
	}
	$s->{out} =~ s/\A(.*?)__done_$n\n//s;
	my $out = $1;
	$s->{err} =~ s/\A(.*?)__done_$n\n//s;
	my $err = $1;
	chomp $out;
	return ($out, $err);
}

# Runs SQL in the session and returns its output; an error or a timeout
# fails the test named $what.
sub session_query
{
	my ($s, $sql, $what) = @_;
	my ($out, $err) = session_wait($s, session_send($s, $sql), 60);
	if (!defined $out)
	{
		fail("$what: timed out");
		return '';
	}
	is($err, '', "$what: no error");
	return $out;
}

# Runs SQL in the session and returns the SQLSTATE of the error it raised
# (the sessions print errors in verbose form), or what it printed when
# there was none.
sub session_sqlstate
{
	my ($s, $sql) = @_;
	my ($out, $err) = session_wait($s, session_send($s, $sql), 60);
	return 'timeout' unless defined $out;
	return $1 if $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return "no error (output '$out')";
}

sub session_kill
{
	my ($s) = @_;
	eval { $s->{h}->kill_kill; };
	return;
}

1;
