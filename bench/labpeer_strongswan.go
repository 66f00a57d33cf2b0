package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"text/template"
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

func (p *strongswanLabPeer) setupLab(ctx context.Context, n *LabNet, sc *Scenario) error {
	psk, err := randomHex(32)
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
		{n.Gateway, "gateway", labSwanSide{LocalID: mifsecIKEServerID, RemoteID: mifsecIKEClientID, LocalTS: labProtectedNet, RemoteTS: clientTS}},
		{n.Client, "client", labSwanSide{Client: true, Gateway: n.uplink(sc.Client.Interface).GatewayAddr,
			LocalID: mifsecIKEClientID, RemoteID: mifsecIKEServerID, LocalTS: clientTS, RemoteTS: labProtectedNet}},
	}
	var clientURI string
	for _, s := range sides {
		side := s.side
		side.Child, side.PSK = strongswanChild, psk
		dir := filepath.Join(n.Dir, "strongswan-"+s.label)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create strongSwan directory: %w", err)
		}
		conf, swanctl := filepath.Join(dir, "strongswan.conf"), filepath.Join(dir, "swanctl.conf")
		if err := writeTemplate(conf, strongswanConf, strongswanSide{Plugins: strongswanPlugins, Socket: strongswanSocket}); err != nil {
			return err
		}
		if err := writeTemplate(swanctl, labSwanctl, side); err != nil {
			return err
		}
		charon, err := n.Start(s.ns, "charon ("+s.label+")", []string{"STRONGSWAN_CONF=" + conf},
			"unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /run && exec "+charonBinary)
		if err != nil {
			return err
		}
		p.processes = append(p.processes, charon)
		socket := filepath.Join("/proc", strconv.Itoa(charon.PID()), "root", strongswanSocket)
		if err := waitForFile(ctx, socket, charon); err != nil {
			return err
		}
		uri := "unix://" + socket
		if _, err := runCommandIn(ctx, "", []string{"STRONGSWAN_CONF=" + conf},
			"swanctl", "--load-all", "--uri", uri, "--file", swanctl); err != nil {
			return fmt.Errorf("load the configuration: %w\n%s", err, charon.Describe())
		}
		clientURI = uri
	}
	if _, err := runCommand(ctx, "swanctl", "--initiate", "--uri", clientURI, "--child", strongswanChild, "--timeout", "20"); err != nil {
		return fmt.Errorf("initiate: %w\n%s\n%s", err, p.processes[0].Describe(), p.processes[1].Describe())
	}
	return n.waitForPing(ctx, strongswanClientAddr, p.processes...)
}
