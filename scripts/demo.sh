#!/usr/bin/env bash
# The main job, end to end on this machine: builds Manifold, makes a "node"
# (a host netns with an uplink) and three "pods" (netns), attaches each pod
# through manifold-macvlan with dual-stack IPAM exactly as a runtime would
# (CNI_* env + config on stdin), prints what every pod got, proves pod-to-pod
# reachability over IPv4 and IPv6, then detaches and removes everything.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/demo.sh needs root (network namespaces)" >&2; exit 1; }
scripts/install-deps.sh >/dev/null
cargo build --release --bins -q

tag="mfdemo$$"
host="$tag-node"; wire="$tag-wire"; pods=("$tag-pod1" "$tag-pod2" "$tag-pod3")
work=$(mktemp -d /tmp/manifold-demo-XXXX)
bin="$PWD/target/release"
export CNI_PATH="$bin:/usr/lib/cni"

cleanup() {
  for p in "${pods[@]}"; do ip netns del "$p" 2>/dev/null || true; done
  ip netns del "$host" 2>/dev/null || true
  ip netns del "$wire" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$host"; ip netns add "$wire"
ip -n "$host" link add uplink0 type veth peer name wire0 netns "$wire"
ip -n "$host" link set uplink0 up; ip -n "$wire" link set wire0 up
snapshot() { ip -n "$host" -d link show; ip -n "$host" addr show; ip -n "$host" route show table all; }
before=$(snapshot)

conf=$(cat <<JSON
{"cniVersion":"1.0.0","name":"demo-net","type":"manifold-macvlan","master":"uplink0","mode":"bridge",
 "ipam":{"type":"host-local","dataDir":"$work/ipam",
   "ranges":[[{"subnet":"10.123.0.0/24","gateway":"10.123.0.1"}],[{"subnet":"fd12:3::/64","gateway":"fd12:3::1"}]],
   "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]}}
JSON
)

cni() { # verb pod
  CNI_COMMAND=$1 CNI_CONTAINERID="$2" CNI_NETNS="/var/run/netns/$2" CNI_IFNAME=net1 \
    ip netns exec "$host" "$bin/manifold-macvlan" <<<"$conf"
}

echo "Attaching ${#pods[@]} pods to macvlan network demo-net on master uplink0 ..."
for p in "${pods[@]}"; do
  ip netns add "$p"
  start=$(date +%s%N)
  cni ADD "$p" > "$work/$p.json"
  echo "  $p: ADD took $(( ($(date +%s%N) - start) / 1000000 )) ms"
done

python3 - "$work" "${pods[@]}" <<'PY'
import json, sys
work, pods = sys.argv[1], sys.argv[2:]
print(f"\n{'POD':<22}{'INTERFACE':<11}{'NETWORK':<10}{'MAC':<19}ADDRESSES")
for p in pods:
    r = json.load(open(f"{work}/{p}.json"))
    i = r["interfaces"][0]
    print(f"{p:<22}{i['name']:<11}{'demo-net':<10}{i['mac']:<19}{', '.join(x['address'] for x in r['ips'])}")
PY

echo; echo "Reachability from ${pods[0]}:"
first=$(python3 -c 'import json,sys; print(" ".join(x["address"].split("/")[0] for x in json.load(open(sys.argv[1]))["ips"]))' "$work/${pods[0]}.json")
fail=0
for p in "${pods[@]:1}"; do
  for a in $(python3 -c 'import json,sys; print(" ".join(x["address"].split("/")[0] for x in json.load(open(sys.argv[1]))["ips"]))' "$work/$p.json"); do
    if ip netns exec "${pods[0]}" ping -c1 -W2 "$a" >/dev/null; then echo "  -> $p $a ok"; else echo "  -> $p $a FAILED"; fail=1; fi
  done
done
echo "  (${pods[0]} is $first)"

echo; echo "Detaching ..."
for p in "${pods[@]}"; do cni DEL "$p"; done
left=$(find "$work/ipam" -type f ! -name 'last_reserved_ip*' ! -name lock | wc -l)
[ "$(snapshot)" = "$before" ] && echo "  node netns is exactly as before" || { echo "  node netns CHANGED"; fail=1; }
[ "$left" = 0 ] && echo "  no address left allocated" || { echo "  $left addresses leaked"; fail=1; }
exit $fail
