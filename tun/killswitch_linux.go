package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// KillSwitchConfig says what a kill switch lets out of the host.
type KillSwitchConfig struct {
	// Link is the TUN interface: everything routed into it passes.
	Link string
	// Peers are the UDP destinations (the gateway's IKE port and 4500 on
	// each of its addresses) that IKE and ESP reach outside the tunnel.
	Peers []netip.AddrPort
}

// KillSwitch is an nftables table (inet family, "mifsec-LINK") whose output
// chain drops every packet of the host's that would leave outside the
// tunnel. What passes:
//
//   - anything out of the TUN link and out of loopback;
//   - UDP to the peers (IKE and ESP to the gateway), from any interface;
//   - what a physical interface needs to keep its own address: DHCPv4
//     (68→67), DHCPv6 (546→547), and ICMPv6 router and neighbour
//     solicitations and advertisements and MLD reports (types 133-136,
//     143), which are link-local.
//
// An address family the tunnel does not carry has no route into the TUN,
// so its packets find no accepting rule: a tunnel of IPv4 only leaks no
// IPv6. Forwarded packets (a host that routes for others) are not
// filtered: the table guards the host's own traffic.
//
// The table is one netlink batch, so it appears whole or not at all.
// Close deletes the table. A process that dies without Close leaves it in
// place, failing closed; the next start on the same link replaces or
// removes it (RemoveStaleKillSwitch).
type KillSwitch struct {
	mu    sync.Mutex // one netlink batch at a time
	conn  *nftables.Conn
	table *nftables.Table
	chain *nftables.Chain
	cfg   KillSwitchConfig
}

// killSwitchTable is the name of the table guarding link.
func killSwitchTable(link string) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: "mifsec-" + link}
}

// NewKillSwitch installs the kill switch for cfg.Link, replacing a table of
// the same name that a previous run left.
func NewKillSwitch(cfg KillSwitchConfig) (*KillSwitch, error) {
	if err := ValidateName(cfg.Link); err != nil {
		return nil, fmt.Errorf("kill switch: %w", err)
	}
	for _, p := range cfg.Peers {
		if !p.IsValid() || p.Port() == 0 {
			return nil, fmt.Errorf("kill switch: peer %v is not an address and port", p)
		}
	}
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("kill switch: opening nftables: %w", err)
	}
	k := &KillSwitch{conn: conn, table: killSwitchTable(cfg.Link), cfg: cfg}
	drop := nftables.ChainPolicyDrop
	k.chain = &nftables.Chain{
		Name:     "output",
		Table:    k.table,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookOutput,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &drop,
	}
	// Adding, deleting and adding again in one batch replaces a leftover
	// table atomically (adding an existing table is not an error).
	conn.AddTable(k.table)
	conn.DelTable(k.table)
	conn.AddTable(k.table)
	conn.AddChain(k.chain)
	k.addRules()
	if err := conn.Flush(); err != nil {
		return nil, fmt.Errorf("kill switch: installing nftables table inet %s: %w", k.table.Name, explainNftables(err))
	}
	return k, nil
}

// explainNftables adds what a user can do to the errors nftables gives
// when the kernel has no nf_tables or the process lacks CAP_NET_ADMIN.
func explainNftables(err error) error {
	switch {
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w (needs CAP_NET_ADMIN)", err)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT):
		return fmt.Errorf("%w (is the kernel's nf_tables module available? modprobe nf_tables)", err)
	}
	return err
}

// addRules queues the chain's rules (without flushing).
func (k *KillSwitch) addRules() {
	add := func(exprs ...expr.Any) {
		k.conn.AddRule(&nftables.Rule{Table: k.table, Chain: k.chain, Exprs: exprs})
	}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	add(append(matchOutputInterface("lo"), accept)...)
	add(append(matchOutputInterface(k.cfg.Link), accept)...)
	for _, p := range k.cfg.Peers {
		add(append(matchUDPTo(p), accept)...)
	}
	add(append(matchUDPPorts(unix.NFPROTO_IPV4, 68, 67), accept)...)
	add(append(matchUDPPorts(unix.NFPROTO_IPV6, 546, 547), accept)...)
	add(append(matchICMPv6Types(133, 136), accept)...)
	add(append(matchICMPv6Types(143, 143), accept)...)
	// A last rule that counts what the policy would drop: Dropped reads
	// it, and `nft list table inet mifsec-LINK` shows it.
	add(&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

// Dropped returns how many packets and bytes the kill switch has dropped.
func (k *KillSwitch) Dropped() (packets, bytes uint64, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	rules, err := k.conn.GetRules(k.table, k.chain)
	if err != nil {
		return 0, 0, fmt.Errorf("kill switch: reading its counter: %w", err)
	}
	if len(rules) == 0 {
		return 0, 0, errors.New("kill switch: its chain is empty")
	}
	for _, e := range rules[len(rules)-1].Exprs {
		if c, ok := e.(*expr.Counter); ok {
			return c.Packets, c.Bytes, nil
		}
	}
	return 0, 0, errors.New("kill switch: its last rule has no counter")
}

// Close deletes the table: traffic flows outside the tunnel again.
func (k *KillSwitch) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.conn.DelTable(k.table)
	if err := k.conn.Flush(); err != nil {
		return fmt.Errorf("kill switch: deleting nftables table inet %s: %w", k.table.Name, err)
	}
	return nil
}

// RemoveStaleKillSwitch deletes the kill switch table a previous run on
// link left (it died without Close), and reports whether there was one.
// A host without nf_tables has none.
func RemoveStaleKillSwitch(link string) (bool, error) {
	conn, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("opening nftables: %w", err)
	}
	t := killSwitchTable(link)
	tables, err := conn.ListTablesOfFamily(t.Family)
	if err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) {
			return false, nil // no nf_tables: no table either
		}
		return false, fmt.Errorf("looking for a kill switch left on %s: %w", link, explainNftables(err))
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name }) {
		return false, nil
	}
	conn.DelTable(t)
	if err := conn.Flush(); err != nil {
		return false, fmt.Errorf("removing the kill switch a previous run left on %s: %w", link, err)
	}
	return true, nil
}

// matchOutputInterface matches packets leaving through the interface name.
func matchOutputInterface(name string) []expr.Any {
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, name)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname},
	}
}

// matchFamily matches the network protocol (NFPROTO_IPV4 or _IPV6).
func matchFamily(family byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
	}
}

// matchL4 matches the transport protocol.
func matchL4(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// matchTransportBytes matches len(want) bytes of the transport header at
// offset.
func matchTransportBytes(offset uint32, want []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: uint32(len(want))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: want},
	}
}

func port(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

// matchUDPTo matches UDP to the address and port.
func matchUDPTo(to netip.AddrPort) []expr.Any {
	family, offset := byte(unix.NFPROTO_IPV4), uint32(16) // IPv4 destination
	if to.Addr().Is6() && !to.Addr().Is4In6() {
		family, offset = unix.NFPROTO_IPV6, 24
	}
	addr := to.Addr().Unmap().AsSlice()
	e := matchFamily(family)
	e = append(e,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(addr))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr})
	e = append(e, matchL4(unix.IPPROTO_UDP)...)
	return append(e, matchTransportBytes(2, port(to.Port()))...)
}

// matchUDPPorts matches UDP of the family from source port to
// destination port.
func matchUDPPorts(family byte, from, to uint16) []expr.Any {
	e := append(matchFamily(family), matchL4(unix.IPPROTO_UDP)...)
	return append(e, matchTransportBytes(0, append(port(from), port(to)...))...)
}

// matchICMPv6Types matches ICMPv6 messages of types first..last.
func matchICMPv6Types(first, last byte) []expr.Any {
	e := append(matchFamily(unix.NFPROTO_IPV6), matchL4(unix.IPPROTO_ICMPV6)...)
	return append(e,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{first}, ToData: []byte{last}})
}
