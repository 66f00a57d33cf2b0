package netmon

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// fakeSysfs writes a /sys/class/net-like tree: per interface its ifindex,
// a uevent with DEVTYPE (if any), and a wireless/ directory (if asked).
func fakeSysfs(t *testing.T, devs map[string]struct {
	index    int
	devtype  string
	wireless bool
}) string {
	t.Helper()
	root := t.TempDir()
	for name, d := range devs {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ifindex"), []byte(strconv.Itoa(d.index)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		uevent := "INTERFACE=" + name + "\nIFINDEX=" + strconv.Itoa(d.index) + "\n"
		if d.devtype != "" {
			uevent = "DEVTYPE=" + d.devtype + "\n" + uevent
		}
		if err := os.WriteFile(filepath.Join(dir, "uevent"), []byte(uevent), 0o644); err != nil {
			t.Fatal(err)
		}
		if d.wireless {
			if err := os.Mkdir(filepath.Join(dir, "wireless"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func TestClassify(t *testing.T) {
	root := fakeSysfs(t, map[string]struct {
		index    int
		devtype  string
		wireless bool
	}{
		"wlp2s0":  {index: 3, devtype: "wlan"},
		"radio0":  {index: 4, wireless: true},
		"modem0":  {index: 5, devtype: "wwan"},
		"eth1":    {index: 6},
		"foreign": {index: 99, devtype: "wlan"}, // another namespace's device of the same name
	})
	tests := []struct {
		name string
		f    linkFacts
		want Kind
	}{
		{"sysfs DEVTYPE=wlan", linkFacts{Name: "wlp2s0", Index: 3, LinkType: "device", Encap: "ether"}, KindWLAN},
		{"sysfs wireless dir", linkFacts{Name: "radio0", Index: 4, LinkType: "device", Encap: "ether"}, KindWLAN},
		{"sysfs DEVTYPE=wwan", linkFacts{Name: "modem0", Index: 5, LinkType: "device", Encap: "none"}, KindCellular},
		{"sysfs without DEVTYPE", linkFacts{Name: "eth1", Index: 6, LinkType: "device", Encap: "ether"}, KindEthernet},
		{"sysfs of another namespace ignored", linkFacts{Name: "foreign", Index: 7, LinkType: "veth", Encap: "ether"}, KindEthernet},
		{"veth named wlan0", linkFacts{Name: "wlan0", Index: 10, LinkType: "veth", Encap: "ether"}, KindWLAN},
		{"veth named wwan0", linkFacts{Name: "wwan0", Index: 11, LinkType: "veth", Encap: "ether"}, KindCellular},
		{"wl prefix", linkFacts{Name: "wlx001122", LinkType: "device", Encap: "ether"}, KindWLAN},
		{"rmnet", linkFacts{Name: "rmnet_data0", LinkType: "device", Encap: "none"}, KindCellular},
		{"usb tethering", linkFacts{Name: "usb0", LinkType: "device", Encap: "ether"}, KindCellular},
		{"raw-IP modem without a name hint", linkFacts{Name: "qmi0", LinkType: "device", Encap: "none"}, KindCellular},
		{"loopback", linkFacts{Name: "lo", Index: 1, LinkType: "device", Encap: "loopback"}, KindLoopback},
		{"tun", linkFacts{Name: "mifsec0", LinkType: "tuntap", Encap: "none"}, KindVirtual},
		{"wireguard", linkFacts{Name: "wg0", LinkType: "wireguard", Encap: "none"}, KindVirtual},
		{"bridge", linkFacts{Name: "br0", LinkType: "bridge", Encap: "ether"}, KindOther},
		{"plain veth", linkFacts{Name: "veth12", LinkType: "veth", Encap: "ether"}, KindEthernet},
		{"unknown", linkFacts{Name: "x0", LinkType: "can", Encap: "can"}, KindOther},
		{"name with a slash never touches sysfs", linkFacts{Name: "../wlp2s0", Index: 3, LinkType: "veth", Encap: "ether"}, KindEthernet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(root, tt.f); got != tt.want {
				t.Errorf("classify(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		})
	}
}

func TestParseKind(t *testing.T) {
	for k := KindOther; k <= KindVirtual; k++ {
		got, ok := ParseKind(k.String())
		if !ok || got != k {
			t.Errorf("ParseKind(%q) = %v, %v", k.String(), got, ok)
		}
	}
	if k, ok := ParseKind("WiFi"); !ok || k != KindWLAN {
		t.Errorf("ParseKind(WiFi) = %v, %v", k, ok)
	}
	if _, ok := ParseKind("wlan0"); ok {
		t.Error("ParseKind accepted an interface name")
	}
}
