package scheduler

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"
)

// Rule is one traffic class: a packet that matches every condition set
// takes Policy. An unset condition matches anything.
type Rule struct {
	Prefix   netip.Prefix // inner destination address (invalid: any)
	Proto    int          // IP protocol, -1: any
	PortLo   uint16       // port range (either the source or the destination
	PortHi   uint16       // port in it); HasPorts says whether it is set
	HasPorts bool
	DSCP     int // -1: any
	Policy   Policy
	// Interfaces binds the class to interfaces (name globs), in order of
	// preference: its packets take the usable paths of the first that
	// has one, and any path when none has (ClassPicker).
	Interfaces []string
	// Peer marks a rule the peer announced for its own traffic (the MIF
	// extension's MIF_CLASSES), followed here for the other direction:
	// Prefix is matched against the inner source (the peer's
	// destination), and Interfaces name the peer's interfaces, the far
	// ends of the paths.
	Peer bool
}

// Classifier maps an inner IP packet to its policy: the first rule that
// matches, else the default. It is immutable once built, so the data plane
// shares one between all workers; Classify makes no allocation.
type Classifier struct {
	rules []Rule
	def   Policy
}

// newClassifier returns a classifier over rules with a default policy.
func newClassifier(def Policy, rules ...Rule) *Classifier {
	return &Classifier{rules: append([]Rule(nil), rules...), def: def}
}

// Default returns the policy of packets no rule matches.
func (c *Classifier) Default() Policy { return c.def }

// Rules returns a copy of the rules.
func (c *Classifier) Rules() []Rule { return append([]Rule(nil), c.rules...) }

// packetHeader is what the classifier reads from an inner packet.
type packetHeader struct {
	Src, Dst netip.Addr
	Proto    int // -1: unknown (truncated)
	SrcPort  uint16
	DstPort  uint16
	HasPorts bool // false for fragments, truncated packets and protocols without ports
	DSCP     int
}

// maxExtHeaders bounds the IPv6 extension headers walked.
const maxExtHeaders = 8

// parseHeader reads the destination, protocol, ports and DSCP of an IPv4 or
// IPv6 packet. ok is false when b is not a well-formed start of one. IPv6
// hop-by-hop, routing, destination-options and AH headers are skipped
// (up to 8); a fragment (any fragment, in either family) has no ports.
func parseHeader(b []byte) (h packetHeader, ok bool) {
	h.Proto = -1
	if len(b) < 1 {
		return h, false
	}
	var off int
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return h, false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return h, false
		}
		h.DSCP = int(b[1] >> 2)
		h.Proto = int(b[9])
		h.Src, h.Dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 {
			return h, true // a fragment: no ports
		}
		off = ihl
	case 6:
		if len(b) < 40 {
			return h, false
		}
		h.DSCP = int((b[0]&0x0f)<<4|b[1]>>4) >> 2
		h.Src, h.Dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		nh := int(b[6])
		off = 40
	walk:
		for range maxExtHeaders {
			switch nh {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(b) < off+2 {
					return h, true
				}
				nh, off = int(b[off]), off+(int(b[off+1])+1)*8
			case 51: // AH
				if len(b) < off+2 {
					return h, true
				}
				nh, off = int(b[off]), off+(int(b[off+1])+2)*4
			case 44: // fragment: protocol known, no ports
				if len(b) < off+1 {
					return h, true
				}
				h.Proto = int(b[off])
				return h, true
			default:
				break walk
			}
		}
		switch nh {
		case 0, 43, 60, 51, 44:
			return h, true // too many extension headers
		}
		h.Proto = nh
	default:
		return h, false
	}
	switch h.Proto {
	case 6, 17, 33, 132, 136: // TCP, UDP, DCCP, SCTP, UDP-Lite
		if len(b) >= off+4 {
			h.SrcPort = binary.BigEndian.Uint16(b[off:])
			h.DstPort = binary.BigEndian.Uint16(b[off+2:])
			h.HasPorts = true
		}
	}
	return h, true
}

// Classify returns the policy of an inner IP packet. A packet that does
// not parse takes the default policy.
func (c *Classifier) Classify(pkt []byte) Policy {
	pol, _ := c.ClassifyRule(pkt)
	return pol
}

// ClassifyRule is Classify that also returns the index of the rule that
// matched, -1 for the default.
func (c *Classifier) ClassifyRule(pkt []byte) (Policy, int) {
	if c == nil {
		return PolicyAggregate, -1
	}
	if len(c.rules) == 0 {
		return c.def, -1
	}
	h, ok := parseHeader(pkt)
	if !ok {
		return c.def, -1
	}
	for i := range c.rules {
		if c.rules[i].match(&h) {
			return c.rules[i].Policy, i
		}
	}
	return c.def, -1
}

// match reports whether a parsed header matches the rule.
func (r *Rule) match(h *packetHeader) bool {
	addr := h.Dst
	if r.Peer {
		addr = h.Src
	}
	if r.Prefix.IsValid() && (!addr.IsValid() || !r.Prefix.Contains(addr)) {
		return false
	}
	if r.Proto >= 0 && h.Proto != r.Proto {
		return false
	}
	if r.DSCP >= 0 && h.DSCP != r.DSCP {
		return false
	}
	if r.HasPorts && (!h.HasPorts ||
		((h.DstPort < r.PortLo || h.DstPort > r.PortHi) && (h.SrcPort < r.PortLo || h.SrcPort > r.PortHi))) {
		return false
	}
	return true
}

// ErrRuleSyntax is wrapped by every error of ParseRules.
var ErrRuleSyntax = errors.New("scheduler: bad traffic class")

var protoNames = map[string]int{
	"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "dccp": 33, "gre": 47, "esp": 50,
	"ah": 51, "icmpv6": 58, "sctp": 132, "udplite": 136,
}

var dscpNames = map[string]int{
	"ef": 46, "va": 44, "le": 1,
	"cs0": 0, "cs1": 8, "cs2": 16, "cs3": 24, "cs4": 32, "cs5": 40, "cs6": 48, "cs7": 56,
	"af11": 10, "af12": 12, "af13": 14, "af21": 18, "af22": 20, "af23": 22,
	"af31": 26, "af32": 28, "af33": 30, "af41": 34, "af42": 36, "af43": 38,
}

// ParseRules parses traffic classes: rules separated by commas, semicolons
// or white space, each MATCH:POLICY, where MATCH is one or more terms
// joined by '+', all of which must match:
//
//	10.0.0.0/8, 2001:db8::/32, 192.0.2.7   inner destination prefix or address
//	tcp, udp, icmp, proto=47               IP protocol (name or number)
//	udp/5060-5061, tcp/443                 protocol and port range (source or destination port)
//	port=8000-8100                         port range, any protocol with ports
//	dscp=46, dscp=ef, dscp=af41            DiffServ code point
//	any                                    every packet
//	default                                the policy of everything else
//
// and POLICY is single, offload, aggregate or redundant, optionally bound to
// interfaces: POLICY@GLOB[>GLOB...] sends the class on the usable paths of
// the first interface (name glob) that has one, in the order given, and on
// any path when none has. def is the default policy when no "default" rule
// is given. Example:
//
//	dscp=ef:redundant, udp/5060-5061:redundant@wwan*, tcp/22:offload@wlan0>eth0, default:aggregate
func ParseRules(spec string, def Policy) (*Classifier, error) {
	c := &Classifier{def: def}
	fields := strings.FieldsFunc(spec, func(r rune) bool {
		return r == ',' || r == ';' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
	seenDefault := false
	for i, f := range fields {
		colon := strings.LastIndexByte(f, ':')
		if colon <= 0 || colon == len(f)-1 {
			return nil, fmt.Errorf("%w: rule %d %q: want MATCH:POLICY", ErrRuleSyntax, i+1, f)
		}
		polName, bound, isBound := strings.Cut(f[colon+1:], "@")
		pol, err := ParsePolicy(polName)
		if err != nil {
			return nil, fmt.Errorf("%w: rule %d %q: unknown policy %q", ErrRuleSyntax, i+1, f, polName)
		}
		var ifaces []string
		if isBound {
			for _, g := range strings.Split(bound, ">") {
				if _, err := path.Match(g, ""); g == "" || err != nil {
					return nil, fmt.Errorf("%w: rule %d %q: interface %q: want a name or glob, several in order joined by '>'", ErrRuleSyntax, i+1, f, g)
				}
				ifaces = append(ifaces, g)
			}
		}
		match := f[:colon]
		if strings.EqualFold(match, "default") {
			if isBound {
				return nil, fmt.Errorf("%w: rule %d %q: the default cannot be bound to interfaces", ErrRuleSyntax, i+1, f)
			}
			if seenDefault {
				return nil, fmt.Errorf("%w: rule %d %q: second default", ErrRuleSyntax, i+1, f)
			}
			seenDefault, c.def = true, pol
			continue
		}
		r, err := parseMatch(match)
		if err != nil {
			return nil, fmt.Errorf("%w: rule %d %q: %v", ErrRuleSyntax, i+1, f, err)
		}
		r.Policy, r.Interfaces = pol, ifaces
		c.rules = append(c.rules, r)
	}
	return c, nil
}

func parseMatch(m string) (Rule, error) {
	r := Rule{Proto: -1, DSCP: -1}
	for _, t := range strings.Split(m, "+") {
		lt := strings.ToLower(t)
		switch {
		case t == "":
			return r, errors.New("empty term")
		case lt == "any":
		case lt == "peer":
			r.Peer = true // as the peer announced it (Rule.Peer)
		case strings.HasPrefix(lt, "dscp="):
			v := lt[5:]
			d, ok := dscpNames[v]
			if !ok {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 || n > 63 {
					return r, fmt.Errorf("dscp %q: want 0-63 or a name like ef, af41, cs6", v)
				}
				d = n
			}
			if err := setOnce(&r.DSCP, d, "dscp"); err != nil {
				return r, err
			}
		case strings.HasPrefix(lt, "proto="):
			p, err := parseProto(lt[6:])
			if err != nil {
				return r, err
			}
			if err := setOnce(&r.Proto, p, "protocol"); err != nil {
				return r, err
			}
		case strings.HasPrefix(lt, "port="):
			if err := r.setPorts(lt[5:]); err != nil {
				return r, err
			}
		case strings.ContainsAny(t, ".:") || (strings.Contains(t, "/") && isDigits(t[:strings.IndexByte(t, '/')])):
			var p netip.Prefix
			var err error
			if strings.Contains(t, "/") {
				p, err = netip.ParsePrefix(t)
			} else {
				var a netip.Addr
				if a, err = netip.ParseAddr(t); err == nil {
					if a.Zone() != "" {
						return r, fmt.Errorf("address %q: zones are not allowed", t)
					}
					p = netip.PrefixFrom(a, a.BitLen())
				}
			}
			if err != nil {
				return r, fmt.Errorf("prefix %q: %v", t, err)
			}
			if p.Addr().Zone() != "" {
				return r, fmt.Errorf("prefix %q: zones are not allowed", t)
			}
			if r.Prefix.IsValid() {
				return r, errors.New("two prefixes")
			}
			r.Prefix = p.Masked()
		default:
			name, ports, hasPorts := strings.Cut(lt, "/")
			p, err := parseProto(name)
			if err != nil {
				return r, err
			}
			if err := setOnce(&r.Proto, p, "protocol"); err != nil {
				return r, err
			}
			if hasPorts {
				switch p {
				case 6, 17, 33, 132, 136:
				default:
					return r, fmt.Errorf("protocol %s has no ports", name)
				}
				if err := r.setPorts(ports); err != nil {
					return r, err
				}
			}
		}
	}
	return r, nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func setOnce(v *int, n int, what string) error {
	if *v >= 0 && *v != n {
		return fmt.Errorf("two different %s values", what)
	}
	*v = n
	return nil
}

func parseProto(s string) (int, error) {
	if p, ok := protoNames[s]; ok {
		return p, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("protocol %q: want a name (tcp, udp, icmp, …) or 0-255", s)
	}
	return n, nil
}

func (r *Rule) setPorts(s string) error {
	if r.HasPorts {
		return errors.New("two port ranges")
	}
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q: want 0-65535", lo)
	}
	b := a
	if isRange {
		if b, err = strconv.ParseUint(hi, 10, 16); err != nil {
			return fmt.Errorf("port %q: want 0-65535", hi)
		}
	}
	if b < a {
		return fmt.Errorf("port range %s: end below start", s)
	}
	r.PortLo, r.PortHi, r.HasPorts = uint16(a), uint16(b), true
	return nil
}

// String formats the rule in ParseRules' syntax.
func (r Rule) String() string {
	var terms []string
	if r.Prefix.IsValid() {
		terms = append(terms, r.Prefix.String())
	}
	switch {
	case r.Proto >= 0 && r.HasPorts:
		terms = append(terms, fmt.Sprintf("proto=%d+port=%d-%d", r.Proto, r.PortLo, r.PortHi))
	case r.Proto >= 0:
		terms = append(terms, fmt.Sprintf("proto=%d", r.Proto))
	case r.HasPorts:
		terms = append(terms, fmt.Sprintf("port=%d-%d", r.PortLo, r.PortHi))
	}
	if r.DSCP >= 0 {
		terms = append(terms, fmt.Sprintf("dscp=%d", r.DSCP))
	}
	if len(terms) == 0 {
		terms = append(terms, "any")
	}
	if r.Peer {
		terms = append([]string{"peer"}, terms...)
	}
	s := strings.Join(terms, "+") + ":" + r.Policy.String()
	if len(r.Interfaces) > 0 {
		s += "@" + strings.Join(r.Interfaces, ">")
	}
	return s
}

// maxPeerRules bounds the rules a peer may announce.
const maxPeerRules = 32

// WithPeerRules returns a classifier whose rules are the peer's, parsed
// from spec (what it announced, in ParseRules' syntax) and marked Peer,
// ahead of c's own, with c's default (c may be nil: def). A peer's own
// default is not followed.
func (c *Classifier) WithPeerRules(spec string, def Policy) (*Classifier, error) {
	peer, err := ParseRules(spec, def)
	if err != nil {
		return nil, err
	}
	if len(peer.rules) > maxPeerRules {
		return nil, fmt.Errorf("%w: %d rules, at most %d", ErrRuleSyntax, len(peer.rules), maxPeerRules)
	}
	out := &Classifier{def: def}
	for _, r := range peer.rules {
		r.Peer = true
		out.rules = append(out.rules, r)
	}
	if c != nil {
		out.rules, out.def = append(out.rules, c.rules...), c.def
	}
	return out, nil
}

// Bound reports whether a rule binds its class to interfaces.
func (c *Classifier) Bound() bool {
	for _, r := range c.rules {
		if len(r.Interfaces) > 0 {
			return true
		}
	}
	return false
}

// String formats the classifier in ParseRules' syntax, default last.
func (c *Classifier) String() string {
	parts := make([]string, 0, len(c.rules)+1)
	for _, r := range c.rules {
		parts = append(parts, r.String())
	}
	return strings.Join(append(parts, "default:"+c.def.String()), ", ")
}
