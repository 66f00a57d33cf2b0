#!/bin/bash
# One client fleet (`mifsec bench clients`) against a gateway in a network
# namespace: mifsec's, strongSwan's charon (kernel-libipsec, userspace ESP),
# or both one after the other in the same run, with the same clients, source
# addresses and flags. Needs root; strongSwan needs the Debian packages that
# .ci/run installs.
#
#   sudo MIFSEC=./mifsec bench/scripts/gateway/fleet.sh both 10000 --rate 1000 --timeout 60s
#   sudo MIFSEC=./mifsec bench/scripts/gateway/fleet.sh mifsec 1000 --traffic 10s --traffic-clients 1,1000
#
# Topology: namespace gf-cl (the fleet, 192.0.2.1 and SOURCES source
# addresses 192.0.2.101.., default 20) — one veth — namespace gf-gw (the
# gateway, 192.0.2.2, the protected network 10.1.0.0/24 with 10.1.0.1 on
# lo, the pool 10.3.0.0/16). The bench command gets --gateway-pid, so it
# prints the gateway's memory and CPU per client; --json goes to
# fleet-GATEWAY-COUNT.json in the current directory, the gateway's log to
# fleet-GATEWAY-COUNT.gateway.log.
#
# FLEETS=N splits the clients over N fleet processes (a process holds at most
# some 19,000 client sockets here: 100,000 clients need six or more), each
# with its own identities and every source address, started at once under
# nice -n ${FLEET_NICE:-10} (the harness shares the gateway's cores), each
# with the flags given (so --rate is per fleet). The script then reads the
# gateway's VmRSS itself: before, once every fleet is up, and at the end of
# --hold, which must outlast the slowest fleet's setup:
#
#   sudo FLEETS=10 MIFSEC=./mifsec bench/scripts/gateway/fleet.sh mifsec 100000 \
#       --rate 100 --timeout 60s --hold 300s
#
# GATEWAY_MIFSEC is the mifsec binary the gateway runs (default: MIFSEC), so
# that two gateway builds meet the same fleet. GATEWAY_ARGS adds flags of
# mifsec gateway (e.g. GATEWAY_ARGS="--max-half-open 8192"). GATEWAY_FLAGS
# adds global flags to mifsec's gateway, e.g. a heap profile
# with the clients held (kill -USR2 the gateway during --hold):
#
#   sudo GATEWAY_FLAGS="--heapprofile /tmp/gw.prof" MIFSEC=./mifsec \
#       bench/scripts/gateway/fleet.sh mifsec 10000 --rate 3000 --hold 25s
#   sudo pkill -USR2 -f "heapprofile /tmp/gw.prof"     # while the clients are held
#   go tool pprof -sample_index=inuse_space -top ./mifsec /tmp/gw.prof
#
# strongSwan runs with its DoS thresholds raised (block_threshold and
# cookie_threshold 1000 half-open SAs) and ikesa_table_size 4096, as its
# documentation advises for a gateway with many clients: with its defaults it
# blocks a source address with more than five half-open SAs, which a fleet
# from twenty addresses always has.
set -euo pipefail
which=${1:?usage: fleet.sh mifsec|strongswan|both COUNT [mifsec bench clients flags]}
count=${2:?usage: fleet.sh mifsec|strongswan|both COUNT [mifsec bench clients flags]}
shift 2
mifsec=${MIFSEC:-mifsec}
gateway_mifsec=${GATEWAY_MIFSEC:-$mifsec}
sources=${SOURCES:-20}
fleets=${FLEETS:-1}
pool=10.3.0.0/16
if [ "$count" -gt 60000 ]; then pool=10.64.0.0/14; fi
psk="a secret every client shares"
dir=$(mktemp -d)
gwpid=
cleanup() {
	if [ -n "$gwpid" ]; then kill -- -"$gwpid" 2>/dev/null || kill "$gwpid" 2>/dev/null || true; wait "$gwpid" 2>/dev/null || true; fi
	ip netns del gf-cl 2>/dev/null || true
	ip netns del gf-gw 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM

topology() {
	ip netns add gf-cl
	ip netns add gf-gw
	ip link add gfv0 netns gf-cl type veth peer name gfv1 netns gf-gw
	ip -n gf-cl addr add 192.0.2.1/24 dev gfv0
	ip -n gf-gw addr add 192.0.2.2/24 dev gfv1
	ip -n gf-gw addr add 10.1.0.1/24 dev lo
	for ns in gf-cl gf-gw; do ip -n $ns link set lo up; done
	ip -n gf-cl link set gfv0 up
	ip -n gf-gw link set gfv1 up
	for i in $(seq 1 "$sources"); do ip -n gf-cl addr add 192.0.2.$((100 + i))/24 dev gfv0; done
}

start_mifsec() {
	# shellcheck disable=SC2086 # GATEWAY_FLAGS and GATEWAY_ARGS are lists of flags
	setsid ip netns exec gf-gw "$gateway_mifsec" --log-level warn ${GATEWAY_FLAGS:-} gateway --tun gfgw0 --pool "$pool" \
		--local-ts 10.1.0.0/24 --local-id gw.example --psk-file "$dir/psk" ${GATEWAY_ARGS:-} >"$dir/gateway.log" 2>&1 &
	gwpid=$!
	for _ in $(seq 100); do
		ip netns exec gf-gw "$mifsec" status --tun gfgw0 >/dev/null 2>&1 && return
		sleep 0.1
	done
	echo "mifsec gateway did not start:"; cat "$dir/gateway.log"; exit 1
}

start_strongswan() {
	cat >"$dir/strongswan.conf" <<CONF
charon {
	load = random nonce openssl aesni aes sha1 sha2 hmac gcm chapoly curve25519 x509 pem pkcs1 pkcs8 pubkey kdf gmp kernel-libipsec kernel-netlink socket-default vici attr updown
	port = 500
	port_nat_t = 4500
	ikesa_table_size = 4096
	ikesa_table_segments = 16
	block_threshold = 1000
	cookie_threshold = 1000
	filelog {
		stderr {
			default = 0
		}
	}
	plugins {
		kernel-libipsec {
			allow_peer_ts = yes
		}
		vici {
			socket = unix:///run/mifsec-charon.vici
		}
	}
}
CONF
	sed "s|@PSK@|$psk|" "$(dirname "$0")/swanctl-fleet.conf" >"$dir/swanctl.conf"
	STRONGSWAN_CONF="$dir/strongswan.conf" setsid ip netns exec gf-gw unshare --mount sh -c \
		"mount -t tmpfs tmpfs /run && exec /usr/lib/ipsec/charon" >"$dir/gateway.log" 2>&1 &
	gwpid=$!
	local vici=/proc/$gwpid/root/run/mifsec-charon.vici
	for _ in $(seq 100); do
		[ -S "$vici" ] && break
		sleep 0.1
	done
	# swanctl names each credential directory it does not find on stderr.
	if ! swanctl --load-all --noprompt --file "$dir/swanctl.conf" --uri "unix://$vici" >"$dir/swanctl.log" 2>&1; then
		echo "swanctl --load-all failed:"; cat "$dir/swanctl.log" "$dir/gateway.log"; exit 1
	fi
}

run() {
	local gw=$1
	shift
	topology
	"start_$gw"
	sleep 1 # the gateway's start-up allocations settle before its memory is read
	local src=()
	for i in $(seq 1 "$sources"); do src+=(--source 192.0.2.$((100 + i))); done
	echo "== $gw, $count clients"
	local rc=0
	if [ "$fleets" -gt 1 ]; then
		run_fleets "${src[@]}" -- "$@" || rc=$?
	else
		ip netns exec gf-cl "$mifsec" bench clients --gateway 192.0.2.2 --target 10.1.0.1 --count "$count" \
		--psk-file "$dir/psk" --remote-id gw.example "${src[@]}" --gateway-pid "$gwpid" \
		--json "fleet-$gw-$count.json" "$@" || rc=$?
	fi
	kill -- -"$gwpid" 2>/dev/null || true
	wait "$gwpid" 2>/dev/null || true
	gwpid=
	# The gateway's log (warnings: each refused client with the reason) stays
	# beside the JSON.
	cp "$dir/gateway.log" "fleet-$gw-$count.gateway.log"
	ip netns del gf-cl
	ip netns del gf-gw
	return $rc
}

# rss prints the gateway's VmRSS in kB.
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$gwpid/status"; }

# gateway_summary prints the gateway's status without its list of clients
# (mifsec status --summary) as JSON on one line, or mifsec's error.
gateway_summary() { ip netns exec gf-gw "$gateway_mifsec" status --tun gfgw0 --summary --json 2>&1 | tr -d ' \n'; }

# gateway_clients prints how many clients the gateway holds; nothing when
# it does not answer.
gateway_clients() { gateway_summary | sed -n 's/.*"client_count":\([0-9]*\).*/\1/p'; }

# per_client KB BEFORE CLIENTS prints the growth from BEFORE to KB in bytes
# per client.
per_client() { echo $(( ($1 - $2) * 1024 / ($3 > 0 ? $3 : 1) )); }

# run_fleets SOURCE-FLAGS... -- FLAGS...: $fleets fleets of count/fleets
# clients at once; the gateway's memory before, once all are up, and at the
# end of their --hold, per client established.
run_fleets() {
	local src=()
	while [ "$1" != -- ]; do src+=("$1"); shift; done
	shift
	local per=$((count / fleets)) before up held held_clients= now pids=() i n established=0
	before=$(rss)
	for i in $(seq 1 "$fleets"); do
		nice -n "${FLEET_NICE:-10}" ip netns exec gf-cl "$mifsec" bench clients --gateway 192.0.2.2 --target 10.1.0.1 \
			--count "$per" --id-prefix "f$i" --psk-file "$dir/psk" --remote-id gw.example "${src[@]}" \
			--gateway-pid "$gwpid" --json "fleet-mifsec-$count-$i.json" "$@" >"$dir/fleet-$i.log" 2>&1 &
		pids+=($!)
	done
	# Each fleet prints its "clients:" line once its setup is over.
	while :; do
		n=$(grep -l " clients: " "$dir"/fleet-*.log 2>/dev/null | wc -l)
		[ "$n" -ge "$fleets" ] && break
		for i in "${!pids[@]}"; do kill -0 "${pids[$i]}" 2>/dev/null || [ -s "$dir/fleet-$((i + 1)).log" ] || { echo "fleet $((i + 1)) ended early"; break 2; }; done
		sleep 1
	done
	up=$(rss)
	for i in $(seq 1 "$fleets"); do
		n=$(sed -n 's/.* clients: \([0-9]*\) established.*/\1/p' "$dir/fleet-$i.log")
		established=$((established + ${n:-0}))
		grep " clients: " "$dir/fleet-$i.log" | sed "s/^/fleet $i: /"
	done
	echo "all fleets up: $established of $count established; gateway VmRSS ${before} kB before, ${up} kB with them ($(per_client "$up" "$before" "$established") bytes per client)"
	# How many clients the gateway holds, what it refused or dropped by
	# reason.
	local status
	if status=$(gateway_summary) && [[ $status == *client_count* ]]; then
		echo "gateway: $(grep -o '"client_count":[0-9]*' <<<"$status"), $(grep -o '"ike_failures":{[^}]*}' <<<"$status" || echo "no IKE failures counted")"
	else
		echo "gateway: mifsec status failed: $status"
	fi
	# Datagrams the kernel dropped before the gateway or a client read them
	# (a socket's receive buffer full), which no counter of theirs sees.
	local ns
	for ns in gf-gw gf-cl; do
		echo "namespace $ns: $(ip netns exec $ns nstat -az UdpInDatagrams UdpOutDatagrams UdpRcvbufErrors UdpInErrors UdpNoPorts UdpMemErrors UdpSndbufErrors | awk 'NR > 1 { printf "%s %s ", $1, $2 }')"
	done
	# Read once more just before the first fleet's --hold ends.
	while :; do
		n=$(grep -l "held idle" "$dir"/fleet-*.log 2>/dev/null | wc -l)
		if [ "$n" -gt 0 ] || ! kill -0 "${pids[0]}" 2>/dev/null; then break; fi
		held=$(rss)
		now=$(gateway_clients) && [ -n "$now" ] && held_clients=$now # the last answer, should one time out
		sleep 1
	done
	[ -n "${held:-}" ] && echo "held: gateway VmRSS ${held} kB with the $established clients ($(per_client "$held" "$before" "$established") bytes per client); the gateway held ${held_clients:-?} clients"
	local rc=0
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	return $rc
}

(umask 077 && echo "$psk" >"$dir/psk")
case $which in
mifsec | strongswan) run "$which" "$@" ;;
both)
	rc=0
	run mifsec "$@" || rc=$?
	run strongswan "$@" || rc=$?
	exit $rc
	;;
*) echo "fleet.sh: mifsec, strongswan or both, not $which" >&2; exit 2 ;;
esac
