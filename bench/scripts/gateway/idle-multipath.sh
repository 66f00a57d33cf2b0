#!/bin/bash
# Idle multipath clients: N `mifsec connect` clients, each with two
# interfaces (veths e1 and e2 in its own namespace, bridged to the
# gateway's namespace on two subnets), at one `mifsec gateway`; once every
# tunnel answered a ping, the clients are left without traffic for SETTLE
# seconds, then the script reads over WAIT seconds what the gateway and
# client 1 cost: CPU (utime + stime from /proc), context switches (every
# thread's, voluntary and not), and the packets client 1 sends per
# interface. Needs root and iproute2.
#
#   sudo MIFSEC=./mifsec bench/scripts/gateway/idle-multipath.sh 20 30
#   sudo SETTLE=12 MIFSEC=./mifsec bench/scripts/gateway/idle-multipath.sh 20 30
#
# SETTLE=12 waits past the detector's QuietAfter (10 s) so that the figures
# are those of a quiet session (docs/scheduler.md, "Failure detector").
# CLIENT_INTERFACES (default 'e*') is the clients' --interfaces: e1 gives
# clients of one path. PING_ROUNDS (default 30) bounds the rounds of pings
# the tunnels get to answer. The namespaces are named mi-gw and mi-cN: run
# one copy at a time.
set -euo pipefail
count=${1:-20}
wait_s=${2:-30}
mifsec=${MIFSEC:-mifsec}
settle=${SETTLE:-0}
dir=$(mktemp -d)
gwpid=
cleanup() {
	# The clients first, so that each deletes its IKE SA at a live gateway.
	for i in $(seq 1 "$count"); do ip netns pids "mi-c$i" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
	sleep 1
	if [ -n "$gwpid" ]; then
		kill "$gwpid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$gwpid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$gwpid" 2>/dev/null || true
	fi
	for i in $(seq 1 "$count"); do
		ip netns pids "mi-c$i" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
		ip netns del "mi-c$i" 2>/dev/null || true
	done
	ip netns del mi-gw 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM
echo "a secret every client shares" >"$dir/psk"
chmod 600 "$dir/psk"

ip netns add mi-gw
ip -n mi-gw link set lo up
ip -n mi-gw addr add 10.1.0.1/24 dev lo
for s in 1 2; do
	ip -n mi-gw link add "br$s" type bridge
	ip -n mi-gw addr add "172.30.$s.1/24" dev "br$s"
	ip -n mi-gw link set "br$s" up
done
ip netns exec mi-gw sysctl -qw net.ipv4.conf.all.rp_filter=0
for i in $(seq 1 "$count"); do
	ns=mi-c$i
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	for s in 1 2; do
		ip link add "e$s" netns "$ns" type veth peer name "c${i}e$s" netns mi-gw
		ip -n mi-gw link set "c${i}e$s" master "br$s" up
		ip -n "$ns" addr add "172.30.$s.$((i + 10))/24" dev "e$s"
		ip -n "$ns" link set "e$s" up
	done
	# e2 reaches the gateway's address on br1 through the gateway's
	# namespace, which owns both subnets.
	ip -n "$ns" route add default via 172.30.2.1 dev e2 metric 200
done

ip netns exec mi-gw "$mifsec" --log-level warn gateway --tun migw0 --pool 10.3.0.0/16 --local-ts 10.1.0.0/24 \
	--local-id gw.example --psk-file "$dir/psk" >"$dir/gateway.log" 2>&1 &
gwpid=$!
for i in $(seq 1 "$count"); do
	ip netns exec "mi-c$i" "$mifsec" --log-level warn connect --gateway 172.30.1.1 --local-id "c$i@idle.bench" \
		--remote-id gw.example --psk-file "$dir/psk" --interfaces "${CLIENT_INTERFACES:-e*}" --policy aggregate --dns off \
		--tun "mi$i" >"$dir/client-$i.log" 2>&1 &
	sleep 0.2
done
# Every tunnel must answer a ping, within PING_ROUNDS rounds.
declare -A answered=()
for _ in $(seq "${PING_ROUNDS:-30}"); do
	for i in $(seq 1 "$count"); do
		[ -n "${answered[$i]:-}" ] && continue
		ip netns exec "mi-c$i" ping -I "mi$i" -c1 -W1 10.1.0.1 >/dev/null 2>&1 && answered[$i]=1
	done
	[ "${#answered[@]}" = "$count" ] && break
	sleep 1
done
echo "${#answered[@]} of $count clients' tunnels answer a ping"
if [ "${#answered[@]}" != "$count" ]; then
	for i in $(seq 1 "$count"); do
		[ -n "${answered[$i]:-}" ] || { echo "client $i:"; tail -3 "$dir/client-$i.log"; }
	done | head -6 || true
	echo "gateway:"; { grep -v cgo "$dir/gateway.log" || true; } | tail -30; ps -o pid,etimes,args -p "$gwpid" || echo "the gateway is gone"
	exit 1
fi
# In the background, so that a TERM ends the wait at once.
sleep "$settle" &
wait $!

client=$(ip netns pids mi-c1 | head -1)
[ -n "$client" ] || { echo "client 1 is gone:"; tail -5 "$dir/client-1.log"; exit 1; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
txp() { ip netns exec mi-c1 cat "/sys/class/net/$1/statistics/tx_packets"; }
# The gateway's and client 1's CPU and context switches, and client 1's
# packets sent on e1 and e2, on one line.
counters() { echo "$(cpu "$gwpid") $(cpu "$client") $(switches "$gwpid") $(switches "$client") $(txp e1) $(txp e2)"; }
read -r g0 c0 gs0 cs0 e10 e20 <<<"$(counters)"
sleep "$wait_s" &
wait $!
read -r g1 c1 gs1 cs1 e11 e21 <<<"$(counters)"
[ -n "$e21" ] || { echo "the gateway or client 1 died during the wait"; exit 1; }
hz=$(getconf CLK_TCK)
awk -v g=$((g1 - g0)) -v c=$((c1 - c0)) -v gs=$((gs1 - gs0)) -v cs=$((cs1 - cs0)) -v hz="$hz" -v w="$wait_s" -v n="$count" \
	-v e1=$((e11 - e10)) -v e2=$((e21 - e20)) 'BEGIN {
	printf "idle %d s, %d clients: gateway %.1f%% of a core (%.2f ms a second per client), %d context switches/s\n", w, n, g / hz / w * 100, g / hz / w / n * 1000, gs / w
	printf "client 1: %.2f%% of a core, %d context switches/s, %.1f and %.1f packets/s sent on e1 and e2\n", c / hz / w * 100, cs / w, e1 / w, e2 / w
}'
