
# Copyright (c) 2026, estream developers

# The stable-offset invariant of test/t/002_offset_invariant.pl under
# constant eviction: 24 partitions and 16 shared partition slots, so that
# the slots of idle partitions are taken back all the time and initialized
# again from what is stored, while producers commit, roll back, fail and
# are terminated, and consumers long-poll.  No offset may be skipped or
# handed out twice, and no watermark may move backwards.

use strict;
use warnings;

use File::Basename;
# loaded here, at compile time, so that their INIT blocks run
use IPC::Run;
use EstreamNode;
use PostgreSQL::Test::Utils;
use Test::More;

$ENV{ESTREAM_INVARIANT_PARTITIONS} = 24;
$ENV{ESTREAM_INVARIANT_SLOTS} = 16;

my $script = dirname(__FILE__) . '/002_offset_invariant.pl';
unless (defined do $script)
{
	die "could not run $script: $@" if $@;
	die "could not read $script: $!" if $!;
}
