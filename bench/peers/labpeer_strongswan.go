package peers

import (
	"context"
	"fmt"
	"net/netip"
	"text/template"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/scenarios"
)

// labSwanctl is a road-warrior setup: the client names only the gateway's
// address and leaves its own addresses to charon (%any), so that MOBIKE
// may move the SAs to another interface.
var labSwanctl = template.Must(template.New("swanctl.conf").Parse(`connections {
	lab {
		version = 2
{{- if .Client}}
		remote_addrs = {{.Gateway}}
{{- end}}
		proposals = aes256gcm16-prfsha256-x25519
		encap = yes
		local {
			auth = psk
			id = {{.LocalID}}
		}
		remote {
			auth = psk
			id = {{.RemoteID}}
		}
		children {
			{{.Child}} {
				local_ts = {{.LocalTS}}
				remote_ts = {{.RemoteTS}}
				esp_proposals = aes256gcm16
				mode = tunnel
			}
		}
	}
}
secrets {
	ike-lab {
		id-client = client.bench
		id-gateway = gateway.bench
		secret = 0x{{.PSK}}
	}
}
`))

type labSwanSide struct {
	Client            bool
	Gateway           netip.Addr
	LocalID, RemoteID string
	LocalTS, RemoteTS netip.Prefix
	Child, PSK        string
}

func (p *strongswanLabPeer) setupLab(ctx context.Context, n *labnet.LabNet, sc *scenarios.Scenario) error {
	psk, err := labnet.RandomHex(32)
	if err != nil {
		return err
	}
	if _, err := n.Run(ctx, n.Client, "ip", "addr", "add", netip.PrefixFrom(strongswanClientAddr, 32).String(), "dev", "lo"); err != nil {
		return fmt.Errorf("inner address: %w", err)
	}
	clientTS := netip.PrefixFrom(strongswanClientAddr, 32)
	sides := []struct {
		ns, label string
		side      labSwanSide
	}{
		{n.Gateway, "gateway", labSwanSide{LocalID: mifsecIKEServerID, RemoteID: mifsecIKEClientID, LocalTS: labnet.LabProtectedNet, RemoteTS: clientTS}},
		{n.Client, "client", labSwanSide{Client: true, Gateway: n.Uplink(sc.Client.Interface).GatewayAddr,
			LocalID: mifsecIKEClientID, RemoteID: mifsecIKEServerID, LocalTS: clientTS, RemoteTS: labnet.LabProtectedNet}},
	}
	var clientURI string
	for _, s := range sides {
		side := s.side
		side.Child, side.PSK = strongswanChild, psk
		proc, uri, err := startCharon(ctx, n.Start, n.Dir, s.ns, s.label, labSwanctl, side)
		if proc != nil {
			p.processes = append(p.processes, proc)
		}
		if err != nil {
			return err
		}
		clientURI = uri
	}
	if _, err := labnet.RunCommand(ctx, "swanctl", "--initiate", "--uri", clientURI, "--child", strongswanChild, "--timeout", "20"); err != nil {
		return fmt.Errorf("initiate: %w\n%s\n%s", err, p.processes[0].Describe(), p.processes[1].Describe())
	}
	return waitForLabPing(ctx, n, strongswanClientAddr, p.processes...)
}
