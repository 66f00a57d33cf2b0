#!/bin/bash
# One TCP flow from host a to host b (12 s) over token-bucket links (RATE each, both ways); 4 s in,
# the router drops everything on CUT: ra0 (a's first interface) or rb0 (b's first, the address a's
# IKE SA uses). The receiver prints its longest gap between two reads of data.
CUT=${1:-ra0}; RATE=${RATE:-50mbit}; DIR=$(dirname "$(realpath "$0")")
"$DIR/topo.sh"
for d in ra0 ra1 rb0 rb1; do ip netns exec pr tc qdisc replace dev $d root tbf rate $RATE burst 64kb latency 50ms; done
"$DIR/peers.sh" transport || exit 1
sleep 3
ip netns exec pb python3 "$DIR/tcpstall.py" server 10.9.0.2 3 8 & sleep 0.5
(sleep 4
	ip netns exec pr nft add table inet cut
	ip netns exec pr nft add chain inet cut f '{ type filter hook forward priority 0; policy accept; }'
	ip netns exec pr nft add rule inet cut f iifname "$CUT" drop
	ip netns exec pr nft add rule inet cut f oifname "$CUT" drop) &
ip netns exec pa python3 "$DIR/tcpstall.py" client 10.9.0.2 12
wait %1 2> /dev/null; sleep 0.5
pkill -f "peer --tun pe[ab]0"; sleep 1
