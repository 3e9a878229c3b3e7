#!/usr/bin/perl
# demo-httpd.pl — a minimal HTTP/1.0 file server on loopback for the demo's
# crawl (core Perl only, so it runs on any Debian machine).
#
#   demo-httpd.pl ROOT PORTFILE [MAX]
#
# Serves files under ROOT; "/" is a generated index linking every *.html
# file under ROOT (at most MAX, default 300). Binds 127.0.0.1 on a free
# port, writes the port to PORTFILE, and serves until killed. GET only;
# paths with ".." are refused.
use strict;
use warnings;
use IO::Socket::INET;
use File::Find;

my ($root, $portfile, $max) = @ARGV;
die "usage: demo-httpd.pl ROOT PORTFILE [MAX]\n" unless defined $portfile;
$max ||= 300;
my @pages;
find({ wanted => sub { push @pages, $File::Find::name if /\.html?$/ && -f $_ && -r $_ }, no_chdir => 1 }, $root);
@pages = (sort @pages)[0 .. ($#pages < $max - 1 ? $#pages : $max - 1)];
my $index = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Documentation on this machine</title></head>"
  . "<body><h1>Documentation on this machine</h1><ul>\n";
for my $p (@pages) {
  (my $rel = $p) =~ s/^\Q$root\E//;
  $index .= "<li><a href=\"$rel\">$rel</a></li>\n";
}
$index .= "</ul></body></html>\n";

my $srv = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16, ReuseAddr => 1)
  or die "demo-httpd: cannot listen: $!\n";
open(my $pf, '>', "$portfile.tmp") or die "demo-httpd: $portfile: $!\n";
print $pf $srv->sockport, "\n";
close $pf;
rename("$portfile.tmp", $portfile) or die "demo-httpd: $portfile: $!\n";

while (my $c = $srv->accept) {
  $c->autoflush(1);
  my $req = <$c> // '';
  while (my $h = <$c>) { last if $h =~ /^\r?\n$/; }
  my ($method, $path) = $req =~ m{^(\S+)\s+(\S+)};
  my ($status, $type, $body) = ('404 Not Found', 'text/plain', "not found\n");
  if (!defined $method || $method ne 'GET') {
    ($status, $body) = ('405 Method Not Allowed', "GET only\n");
  } elsif ($path eq '/' || $path eq '/index.html') {
    ($status, $type, $body) = ('200 OK', 'text/html; charset=utf-8', $index);
  } elsif ($path !~ /\.\./) {
    $path =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge;
    $path =~ s/[?#].*//;
    my $f = "$root$path";
    if (-f $f && open(my $fh, '<:raw', $f)) {
      local $/;
      $body = <$fh>;
      close $fh;
      $status = '200 OK';
      $type = $f =~ /\.html?$/ ? 'text/html' : $f =~ /\.css$/ ? 'text/css' : 'application/octet-stream';
    }
  }
  print $c "HTTP/1.0 $status\r\nContent-Type: $type\r\nContent-Length: " . length($body) . "\r\nConnection: close\r\n\r\n$body";
  close $c;
}
