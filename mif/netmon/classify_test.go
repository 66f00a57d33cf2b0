package netmon

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/mifsec/mifsec/scheduler"
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
		want scheduler.Kind
	}{
		{"sysfs DEVTYPE=wlan", linkFacts{Name: "wlp2s0", Index: 3, LinkType: "device", Encap: "ether"}, scheduler.KindWLAN},
		{"sysfs wireless dir", linkFacts{Name: "radio0", Index: 4, LinkType: "device", Encap: "ether"}, scheduler.KindWLAN},
		{"sysfs DEVTYPE=wwan", linkFacts{Name: "modem0", Index: 5, LinkType: "device", Encap: "none"}, scheduler.KindCellular},
		{"sysfs without DEVTYPE", linkFacts{Name: "eth1", Index: 6, LinkType: "device", Encap: "ether"}, scheduler.KindEthernet},
		{"sysfs of another namespace ignored", linkFacts{Name: "foreign", Index: 7, LinkType: "veth", Encap: "ether"}, scheduler.KindEthernet},
		{"veth named wlan0", linkFacts{Name: "wlan0", Index: 10, LinkType: "veth", Encap: "ether"}, scheduler.KindWLAN},
		{"veth named wwan0", linkFacts{Name: "wwan0", Index: 11, LinkType: "veth", Encap: "ether"}, scheduler.KindCellular},
		{"wl prefix", linkFacts{Name: "wlx001122", LinkType: "device", Encap: "ether"}, scheduler.KindWLAN},
		{"rmnet", linkFacts{Name: "rmnet_data0", LinkType: "device", Encap: "none"}, scheduler.KindCellular},
		{"usb tethering", linkFacts{Name: "usb0", LinkType: "device", Encap: "ether"}, scheduler.KindCellular},
		{"raw-IP modem without a name hint", linkFacts{Name: "qmi0", LinkType: "device", Encap: "none"}, scheduler.KindCellular},
		{"loopback", linkFacts{Name: "lo", Index: 1, LinkType: "device", Encap: "loopback"}, scheduler.KindLoopback},
		{"tun", linkFacts{Name: "mifsec0", LinkType: "tuntap", Encap: "none"}, scheduler.KindVirtual},
		{"wireguard", linkFacts{Name: "wg0", LinkType: "wireguard", Encap: "none"}, scheduler.KindVirtual},
		{"bridge", linkFacts{Name: "br0", LinkType: "bridge", Encap: "ether"}, scheduler.KindOther},
		{"plain veth", linkFacts{Name: "veth12", LinkType: "veth", Encap: "ether"}, scheduler.KindEthernet},
		{"unknown", linkFacts{Name: "x0", LinkType: "can", Encap: "can"}, scheduler.KindOther},
		{"name with a slash never touches sysfs", linkFacts{Name: "../wlp2s0", Index: 3, LinkType: "veth", Encap: "ether"}, scheduler.KindEthernet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(root, tt.f); got != tt.want {
				t.Errorf("classify(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		})
	}
}
