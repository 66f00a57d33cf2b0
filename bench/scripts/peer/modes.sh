#!/bin/bash
# Goodput of one TCP flow (iperf3 -l 1400, T seconds) each way in transport and tunnel mode, alternately,
# ROUNDS times, over the first interface of each host; RATE shapes the router's links to both hosts
# with tc tbf (empty: unshaped). Needs iperf3.
DIR=$(dirname "$(realpath "$0")"); RATE=${RATE-200mbit}; ROUNDS=${ROUNDS:-3}; T=${T:-8}
"$DIR/topo.sh"
if [ -n "$RATE" ]; then for d in ra0 rb0; do ip netns exec pr tc qdisc replace dev $d root tbf rate $RATE burst 256kb latency 50ms; done; fi
for r in $(seq "$ROUNDS"); do for m in tunnel transport; do
	"$DIR/peers.sh" $m a0 b0 || exit 1
	rate() { python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))'; }
	ip netns exec pb iperf3 -s -D -1 -B 10.9.0.2 > /dev/null 2>&1; sleep 0.3
	up=$(ip netns exec pa iperf3 -c 10.9.0.2 -t "$T" -l 1400 -J | rate)
	ip netns exec pb iperf3 -s -D -1 -B 10.9.0.2 > /dev/null 2>&1; sleep 0.3
	down=$(ip netns exec pa iperf3 -c 10.9.0.2 -t "$T" -l 1400 -R -J | rate)
	echo "$m: a->b $up Mbit/s, b->a $down Mbit/s"
	pkill -f "peer --tun pe[ab]0"; sleep 1
done; done
