#!/usr/bin/env bash
# The main job, end to end on this machine: builds Manifold, makes a "node"
# (a netns with a bridge for the default network and five uplinks eth1..eth5,
# each a veth into a "wire" netns) and three "pods" (netns), and attaches each
# pod through the `manifold` meta-plugin exactly as a runtime would (CNI_* env,
# the conflist's plugin config on stdin, pod annotations in runtimeConfig as
# containerd passes them): the default network plus five dual-stack extras from
# the NetworkAttachmentDefinition files in conf/manifold/manifold.d. It prints
# what every pod got, pings every pod from the first one on every network,
# then detaches everything and removes what it made. Traffic stays inside the
# namespaces the demo creates; the host's own interfaces are never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/demo.sh needs root (network namespaces)" >&2; exit 1; }
scripts/install-deps.sh >/dev/null
profile=${MANIFOLD_PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release --bins -q; else cargo build --bins -q; fi
bin="$PWD/target/$profile"

tag="mfdemo$$"
node="$tag-node"; wire="$tag-wire"; pods=("$tag-pod1" "$tag-pod2" "$tag-pod3")
work=$(mktemp -d /tmp/manifold-demo-XXXX)
confdir="$PWD/conf/manifold/manifold.d"
export CNI_PATH="$bin:/usr/lib/cni"
# manifold-ipam's store for the demo (instead of /var/lib/cni/manifold/ipam).
echo "{\"dataDir\": \"$work/ipam\"}" > "$work/ipam.json"
export MANIFOLD_IPAM_CONFIG="$work/ipam.json"

host_state() { ip -d link show; ip addr show; ip route show table all; ip -6 route show table all; ip netns list; }
host_before=$(host_state | grep -v "$tag")

cleanup() {
  for p in "${pods[@]}"; do ip netns del "$p" 2>/dev/null || true; done
  ip netns del "$node" 2>/dev/null || true
  ip netns del "$wire" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$node"; ip netns add "$wire"
ip -n "$node" link set lo up
for i in 1 2 3 4 5; do
  ip -n "$node" link add "eth$i" type veth peer name "wire$i" netns "$wire"
  ip -n "$node" link set "eth$i" up; ip -n "$wire" link set "wire$i" up
done

# The runtime's conf (conf/manifold/00-manifold.conflist) with the demo's
# confDir (the repository's NAD files), cache dir, and no kubeconfig.
conf=$(python3 - "$confdir" "$work" <<'PY'
import json, sys
confdir, work = sys.argv[1:]
l = json.load(open("conf/manifold/00-manifold.conflist"))
p = dict(l["plugins"][0], cniVersion=l["cniVersion"], name=l["name"],
         confDir=confdir, cniDir=f"{work}/cache", logFile=f"{work}/manifold.log")
p.pop("kubeconfig")
print(json.dumps(p))
PY
)

cni() { # verb pod index
  local c=$conf
  if [ "$1" = ADD ]; then
    c=$(python3 - "$conf" "$3" <<'PY'
import json, sys
conf, n = json.loads(sys.argv[1]), int(sys.argv[2])
sel = [{"name": "fronthaul", "interface": "fh0", "mac": f"0a:58:0a:65:00:{0x20 + n:02x}"},
       {"name": "midhaul"}, {"name": "oam"}, {"name": "signalling", "cni-args": {"role": "n2"}},
       {"name": "media", "ips": [f"10.105.0.{20 + n}/24", f"fd01:105::{20 + n}/64"]}]
conf["runtimeConfig"] = {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": json.dumps(sel)}}
print(json.dumps(conf))
PY
)
  fi
  CNI_COMMAND=$1 CNI_CONTAINERID="$2" CNI_NETNS="/var/run/netns/$2" CNI_IFNAME=eth0 \
  CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$2" \
    ip netns exec "$node" "$bin/manifold" <<<"$c"
}

echo "Attaching ${#pods[@]} pods through manifold: k8s-pod-network (bridge) + fronthaul, midhaul, oam, signalling, media ..."
i=0
for p in "${pods[@]}"; do
  ip netns add "$p"
  start=$(date +%s%N)
  cni ADD "$p" "$i" > "$work/$p.json"
  echo "  $p: ADD of 6 networks took $(( ($(date +%s%N) - start) / 1000000 )) ms"
  i=$((i + 1))
done

python3 - "$work" "${pods[@]}" <<'PY'
import json, sys
work, pods = sys.argv[1], sys.argv[2:]
print(f"\n{'POD':<20}{'IF':<6}{'NETWORK':<20}{'MAC':<19}ADDRESSES")
for p in pods:
    st = json.load(open(f"{work}/cache/state/{p}.json"))["networkStatus"]
    for s in st:
        print(f"{p:<20}{s['interface']:<6}{s['name']:<20}{s.get('mac', '-'):<19}{', '.join(s.get('ips', []))}")
PY

echo; echo "Reachability from ${pods[0]} on every network:"
fail=0
while read -r p ifname addr; do
  if ip netns exec "${pods[0]}" ping -c1 -W1 -w3 -I "$ifname" "$addr" >/dev/null 2>&1; then r=ok; else r=FAILED; fail=1; fi
  printf '  %-6s -> %-20s %-22s %s\n' "$ifname" "$p" "$addr" "$r"
done < <(python3 - "$work" "${pods[@]:1}" <<'PY'
import json, sys
work, pods = sys.argv[1], sys.argv[2:]
for p in pods:
    for s in json.load(open(f"{work}/cache/state/{p}.json"))["networkStatus"]:
        for a in s.get("ips", []):
            print(p, s["interface"], a)
PY
)

echo; echo "Detaching ..."
for p in "${pods[@]}"; do cni DEL "$p"; done
left=$(python3 - "$work/ipam" <<'PY'
import glob, json, sys
print(sum(1 for f in glob.glob(sys.argv[1] + "/*.json")
          for k in json.load(open(f))["entries"] if k.startswith("addrs/")))
PY
)
links=0
for p in "${pods[@]}"; do links=$((links + $(ip -n "$p" -o link show | grep -vc ': lo:' || true))); done
[ "$left" = 0 ] && echo "  no address left allocated" || { echo "  $left addresses leaked"; fail=1; }
[ "$links" = 0 ] && echo "  no interface left in any pod" || { echo "  $links interfaces left in pods"; fail=1; }
[ -z "$(ls -A "$work/cache/state" 2>/dev/null)" ] && echo "  cache empty" || { echo "  cache not empty"; fail=1; }
cleanup; trap - EXIT
[ "$(host_state | grep -v "$tag")" = "$host_before" ] && echo "  host exactly as before" || { echo "  host CHANGED"; fail=1; }
exit $fail
