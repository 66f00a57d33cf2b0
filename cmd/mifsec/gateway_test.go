package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mifsec/mifsec/internal/strongswan"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/mif"
)

// mifsecGatewayTopology is a client namespace and a gateway namespace
// joined by a veth pair; the gateway runs `mifsec gateway` and protects
// 10.1.0.0/24 (an address on its lo), leasing addresses from 10.3.0.0/24.
func mifsecGatewayTopology(t *testing.T, psk string) (client, gw string, g *mifsecProcess) {
	t.Helper()
	testenv.RequireCommand(t, "ping")
	client, gw = testenv.NewNamedNetns(t, "cl"), testenv.NewNamedNetns(t, "gw")
	testenv.Veth(t, client, gw, netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.2/24"))
	testenv.Exec(t, gw, "ip", "addr", "add", "10.1.0.1/24", "dev", "lo")
	g = startMifsec(t, gw, "--log-level", "debug", "gateway", "--tun", "mgw0", "--listen", "192.0.2.2",
		"--local-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk),
		"--pool", "10.3.0.0/24", "--local-ts", "10.1.0.0/24", "--dns", "10.1.0.53")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := mif.ReadStatus(mif.ControlSocket("mgw0")); err == nil {
			return client, gw, g
		}
		select {
		case <-g.done:
			t.Fatalf("mifsec gateway exited:\n%s", g.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mifsec gateway did not start within 10s:\n%s", g.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func gatewayClients(t *testing.T) []mif.GatewayClientStatus {
	raw, err := mif.ReadStatus(mif.ControlSocket("mgw0"))
	if err != nil {
		t.Fatal(err)
	}
	var st mif.GatewayStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return st.Clients
}

func TestMifsecGatewayStrongSwanClient(t *testing.T) {
	strongswan.Require(t)
	const psk = "a secret only the two share"
	client, _, g := mifsecGatewayTopology(t, psk)
	conf := fmt.Sprintf(`connections {
	cl {
		version = 2
		remote_addrs = 192.0.2.2
		vips = 0.0.0.0
		proposals = aes256gcm16-prfsha256-x25519
		local {
			auth = psk
			id = client.example
		}
		remote {
			auth = psk
			id = gw.example
		}
		children {
			net {
				remote_ts = 10.1.0.0/24
				esp_proposals = aes256gcm16
			}
		}
	}
}
secrets {
	ike-1 {
		id-gw = gw.example
		id-cl = client.example
		secret = %q
	}
}
`, psk)
	charon := strongswan.Start(t, strongswan.Config{Netns: client, Swanctl: conf})
	if out, err := charon.Swanctl("--initiate", "--child", "net", "--timeout", "15"); err != nil {
		t.Fatalf("swanctl --initiate: %v\n%s\ncharon:\n%s\nmifsec:\n%s", err, out, charon.Log(), g.log.String())
	}
	sas := charon.MustSwanctl("--list-sas")
	if !strings.Contains(sas, "10.3.0.2") {
		t.Fatalf("the client did not get 10.3.0.2 from the pool:\n%s", sas)
	}
	if err := ping(client, "10.1.0.1", 3); err != nil {
		t.Fatalf("%v\ncharon:\n%s\nmifsec:\n%s", err, charon.Log(), g.log.String())
	}
	cl := gatewayClients(t)
	if len(cl) != 1 || cl[0].ID != "client.example" || cl[0].RxPackets == 0 || cl[0].TxPackets == 0 {
		t.Fatalf("gateway status %+v", cl)
	}
}

func TestMifsecGatewayMifsecClient(t *testing.T) {
	const psk = "a secret only the two share"
	client, _, g := mifsecGatewayTopology(t, psk)
	c := startConnect(t, client, "mcl0", "--gateway", "192.0.2.2", "--local-id", "client.example",
		"--remote-id", "gw.example", "--psk-file", writePSK(t, t.TempDir(), psk), "--ipv6=false")
	st := c.waitEstablished(t, 10*time.Second)
	if len(st.Session.Addresses) != 1 || st.Session.Addresses[0] != "10.3.0.2/32" {
		t.Fatalf("assigned addresses %v, want 10.3.0.2/32", st.Session.Addresses)
	}
	if err := ping(client, "10.1.0.1", 3); err != nil {
		t.Fatalf("%v\nclient:\n%s\ngateway:\n%s", err, c.log.String(), g.log.String())
	}
	if cl := gatewayClients(t); len(cl) != 1 || cl[0].RxPackets == 0 {
		t.Fatalf("gateway status %+v", cl)
	}
}
