package netmon

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mifsec/mifsec/scheduler"
)

// linkFacts is what classification looks at: the netlink link type (veth,
// tuntap, wireguard, bridge, device, ...), the ARPHRD encapsulation, and
// the name and index.
type linkFacts struct {
	Name     string
	Index    int
	LinkType string // netlink.Link.Type()
	Encap    string // LinkAttrs.EncapType: "ether", "loopback", "none", ...
}

// classify returns the kind of an interface. In order:
//  1. loopback encapsulation;
//  2. sysfs (under root, normally /sys/class/net): DEVTYPE=wlan or wwan in
//     uevent, or a wireless/ directory. sysfs shows the devices of the
//     namespace it was mounted in, which need not be the monitored one, so
//     it is trusted only where its ifindex equals the link's;
//  3. name patterns: wlan*, wl* are WLAN; wwan*, rmnet*, usb*, ww* are
//     cellular (usb* is a phone tethering over USB). Labs and containers
//     name veths like this, and drivers without DEVTYPE (many USB modems
//     in ethernet mode) follow the same convention;
//  4. the link type: tunnels and overlays are virtual, bridges and bonds
//     other, physical devices and veths ethernet when their
//     encapsulation is ethernet.
func classify(root string, f linkFacts) scheduler.Kind {
	if f.Encap == "loopback" || f.LinkType == "loopback" {
		return scheduler.KindLoopback
	}
	if root != "" {
		if k, ok := classifySysfs(root, f); ok {
			return k
		}
	}
	if k, ok := classifyName(f.Name); ok {
		return k
	}
	switch f.LinkType {
	case "tuntap", "tun", "wireguard", "ipip", "gre", "gretap", "ip6tnl", "sit", "vti", "vti6",
		"vxlan", "geneve", "ip6gre", "ip6gretap", "xfrm", "dummy", "ifb", "vrf", "nlmon":
		return scheduler.KindVirtual
	case "bridge", "bond", "team", "macvlan", "macvtap", "ipvlan", "vlan":
		return scheduler.KindOther
	case "device", "veth":
		if f.Encap == "ether" || f.Encap == "" {
			return scheduler.KindEthernet
		}
		if f.Encap == "none" || f.Encap == "ppp" {
			// Point-to-point without a link layer: PPP, raw-IP
			// modems.
			return scheduler.KindCellular
		}
	}
	return scheduler.KindOther
}

func classifyName(name string) (scheduler.Kind, bool) {
	switch {
	case strings.HasPrefix(name, "wwan"), strings.HasPrefix(name, "rmnet"),
		strings.HasPrefix(name, "usb"), strings.HasPrefix(name, "ww"):
		return scheduler.KindCellular, true
	case strings.HasPrefix(name, "wlan"), strings.HasPrefix(name, "wl"):
		return scheduler.KindWLAN, true
	case strings.HasPrefix(name, "eth"), strings.HasPrefix(name, "en"):
		return scheduler.KindEthernet, true
	}
	return 0, false
}

func classifySysfs(root string, f linkFacts) (scheduler.Kind, bool) {
	if f.Name == "" || strings.ContainsAny(f.Name, "/") || f.Name == "." || f.Name == ".." {
		return 0, false
	}
	dir := filepath.Join(root, f.Name)
	idx, err := os.ReadFile(filepath.Join(dir, "ifindex"))
	if err != nil {
		return 0, false
	}
	if n, err := strconv.Atoi(strings.TrimSpace(string(idx))); err != nil || n != f.Index {
		return 0, false // another namespace's device of the same name
	}
	if t, ok := ueventDevtype(filepath.Join(dir, "uevent")); ok {
		switch t {
		case "wlan":
			return scheduler.KindWLAN, true
		case "wwan":
			return scheduler.KindCellular, true
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "wireless")); err == nil && st.IsDir() {
		return scheduler.KindWLAN, true
	}
	return 0, false
}

// ueventDevtype returns the DEVTYPE= value of a uevent file.
func ueventDevtype(path string) (string, bool) {
	fd, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer fd.Close()
	sc := bufio.NewScanner(fd)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "DEVTYPE="); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}
