#!/bin/bash
# The workload of assure discover's tests on discoverme (progs/discoverme.c):
# one connection, its port read from the port file $1, a SET and two GETs,
# every reply checked. bash for /dev/tcp: no client to install.
port=$(sed -n 's/^port=//p' "$1")
[ -n "$port" ] || exit 1
exec 3<>/dev/tcp/127.0.0.1/$port || exit 1
printf 'SET a 1\nGET a\nGET zz\n' >&3
read -r l1 <&3; read -r l2 <&3; read -r l3 <&3
exec 3>&-
[ "$l1" = "+OK" ] && [ "$l2" = "1" ] && [ "$l3" = "-NOKEY" ]
