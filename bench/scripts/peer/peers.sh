#!/bin/bash
# Starts `mifsec peer` on both hosts of topo.sh (MODE transport or tunnel, interfaces matching GLOB_A
# and GLOB_B, POLICY) and waits until a ping passes. MIFSEC names the binary (default ./mifsec).
MODE=${1:-transport}; GA=${2:-a*}; GB=${3:-b*}; POLICY=${POLICY:-aggregate}
MIFSEC=$(realpath "${MIFSEC:-./mifsec}"); DIR=$(dirname "$(realpath "$0")"); OUT=${OUT:-/tmp/mifsec-peer}
mkdir -p "$OUT"; printf 'an end to end secret of some length\n' > "$OUT/psk"; chmod 600 "$OUT/psk"
ip netns exec pb "$MIFSEC" peer --tun peb0 --local-id b.example --remote-id a.example --remote 10.93.0.2 \
	--psk-file "$OUT/psk" --local-ts 10.9.0.2/32 --remote-ts 10.9.0.1/32 --interfaces "$GB" --mode "$MODE" --policy "$POLICY" > "$OUT/pb.log" 2>&1 &
ip netns exec pa "$MIFSEC" peer --tun pea0 --local-id a.example --remote-id b.example --remote 10.95.0.2 \
	--psk-file "$OUT/psk" --local-ts 10.9.0.1/32 --remote-ts 10.9.0.2/32 --interfaces "$GA" --mode "$MODE" --policy "$POLICY" > "$OUT/pa.log" 2>&1 &
for i in $(seq 50); do ip netns exec pa ping -c1 -W1 10.9.0.2 > /dev/null 2>&1 && exit 0; sleep 0.2; done
echo "no ping through the tunnel: see $OUT/pa.log and $OUT/pb.log" >&2; exit 1
