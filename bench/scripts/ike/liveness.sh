#!/bin/bash
# How much IKE a client and a gateway exchange for liveness, with real
# processes: `mifsec gateway --dpd 10s` and `mifsec connect --dpd 10s` in two
# network namespaces joined by a veth pair, a ping through the tunnel every
# 0.2 s for 40 s, then 25 s without traffic, then `kill -9` of the client.
# An nftables counter in the gateway's namespace counts the IKE datagrams
# (UDP 4500 with the non-ESP marker) that arrive there in each phase, and
# the script times how long the gateway takes to drop the dead client
# ("client is gone" in its log). Needs root and nft.
#
#   sudo bench/scripts/ike/liveness.sh ./mifsec /tmp/liveness
#
# A client that counts the gateway's ESP as a sign of life sends nothing
# while the ping runs; one that does not sends a liveness check every 10 s.
# The gateway checks a client 10-15 s after its last packet and drops it
# after the check's retransmissions (22 s with the defaults).
set -eu
BIN=$(realpath "${1:?usage: liveness.sh MIFSEC-BINARY OUTDIR}")
OUT=${2:?usage: liveness.sh MIFSEC-BINARY OUTDIR}
mkdir -p "$OUT"
cd "$OUT"
GW=; CL=
cleanup() {
	[ -n "$CL" ] && kill -9 "$CL" 2>/dev/null
	[ -n "$GW" ] && kill "$GW" 2>/dev/null && sleep 1
	ip netns del lv-gw 2>/dev/null
	ip netns del lv-cl 2>/dev/null
	true
}
trap cleanup EXIT
ip netns add lv-gw
ip netns add lv-cl
ip link add lv0 netns lv-gw type veth peer name lv1 netns lv-cl
ip -n lv-gw addr add 192.0.2.2/24 dev lv0
ip -n lv-cl addr add 192.0.2.1/24 dev lv1
for ns in lv-gw lv-cl; do
	ip -n $ns link set lo up
done
ip -n lv-gw link set lv0 up
ip -n lv-cl link set lv1 up
ip -n lv-gw addr add 10.1.0.1/32 dev lo
ip netns exec lv-gw nft -f - <<'NFT'
table inet liveness {
	counter ike {}
	chain in { type filter hook input priority 0; udp dport 4500 @th,64,32 0 counter name ike; }
}
NFT
ike() { ip netns exec lv-gw nft list counter inet liveness ike | awk '/packets/ {print $2}'; }
printf 'a pre-shared key for the liveness check' > psk
chmod 600 psk
ip netns exec lv-gw "$BIN" gateway --tun lvg0 --pool 10.3.0.0/24 --local-ts 10.1.0.0/24 \
	--psk-file psk --local-id gw.example --dpd 10s > gateway.log 2>&1 &
GW=$!
sleep 1
ip netns exec lv-cl "$BIN" connect --gateway 192.0.2.2 --local-id client@example --remote-id gw.example \
	--psk-file psk --tun lvc0 --dpd 10s --remote-ts 10.1.0.0/24 > connect.log 2>&1 &
CL=$!
for i in $(seq 1 20); do
	ip netns exec lv-cl ping -c 1 -W 1 10.1.0.1 > /dev/null 2>&1 && break
	sleep 0.5
done
before=$(ike)
ip netns exec lv-cl ping -q -i 0.2 -w 40 10.1.0.1 > ping.log 2>&1 || true
traffic=$(ike)
sleep 25
quiet=$(ike)
kill -9 "$CL"
CL=
killed=$(date +%s)
for i in $(seq 1 90); do
	grep -q "client is gone" gateway.log && break
	sleep 1
done
noticed=$(date +%s)
echo "IKE datagrams at the gateway: $((traffic - before)) during 40 s of traffic, $((quiet - traffic)) in the 25 s after"
echo "the gateway dropped the killed client after $((noticed - killed)) s"
grep "packets transmitted" ping.log
