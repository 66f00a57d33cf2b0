#!/bin/bash
# Two hosts, namespaces pa and pb, each with two interfaces (a0 a1, b0 b1) to a router namespace pr,
# one subnet per interface (10.93-96.0.0/24), a default route per interface and source rules, and a
# stable address on lo (10.9.0.1, 10.9.0.2). Needs root, iproute2. Removes an earlier topology.
set -e
for n in pa pr pb; do ip netns del $n 2>/dev/null || true; ip netns add $n; ip -n $n link set lo up; done
i=0
for h in "pa a0 93" "pa a1 94" "pb b0 95" "pb b1 96"; do
	set -- $h; ns=$1; name=$2; net=$3
	ip link add name $name netns $ns type veth peer name r$name netns pr
	ip -n pr addr add 10.$net.0.1/24 dev r$name; ip -n pr link set r$name up
	ip -n $ns addr add 10.$net.0.2/24 dev $name; ip -n $ns link set $name up
	ip -n $ns route add default via 10.$net.0.1 dev $name metric $((10 + i % 2))
	ip -n $ns route add default via 10.$net.0.1 dev $name table $((100 + net))
	ip -n $ns rule add from 10.$net.0.2 table $((100 + net))
	i=$((i + 1))
done
ip netns exec pr sysctl -qw net.ipv4.ip_forward=1
ip -n pa addr add 10.9.0.1/32 dev lo
ip -n pb addr add 10.9.0.2/32 dev lo
