package traffic

import (
	"encoding/binary"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// senderInfo reads a sending connection's kernel counters: TCP_INFO for a
// TCP connection; for an MPTCP connection MPTCP_INFO (data-level
// acknowledged bytes, subflows) and MPTCP_TCPINFO (every subflow's
// TCP_INFO, whose retransmissions are summed).
type senderInfo struct {
	raw   syscall.RawConn
	mptcp bool
	// last is returned when a read fails (the connection closed): the
	// counters only grow.
	last senderState
	buf  []byte
}

type senderState struct {
	acked       uint64
	retransmits uint32
	rttUs       uint32
	subflows    int
	// Of a plain TCP connection (zero for MPTCP): the congestion window
	// and slow-start threshold in segments, the minimum RTT seen.
	cwnd, ssthresh uint32
	minRTTUs       uint32
	// dsackDups counts retransmissions the receiver reported as
	// duplicates (spurious); reordSeen the reorderings the sender saw.
	dsackDups, reordSeen uint32
}

// Linux MPTCP socket options (include/uapi/linux/mptcp.h).
const (
	solMPTCP     = 284
	mptcpInfo    = 1
	mptcpTCPInfo = 2
	// Offsets in struct mptcp_info.
	mptcpInfoBytesAcked    = 72
	mptcpInfoSubflowsTotal = 80
	// struct mptcp_subflow_data: size_subflow_data, num_subflows,
	// size_kernel, size_user (4 bytes each).
	subflowDataLen = 16
	maxSubflows    = 8
)

var tcpInfoLen = int(unsafe.Sizeof(unix.TCPInfo{}))

func newSenderInfo(c net.Conn) *senderInfo {
	s := &senderInfo{}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return s
	}
	s.raw, _ = tc.SyscallConn()
	s.mptcp, _ = tc.MultipathTCP()
	if s.mptcp {
		s.buf = make([]byte, subflowDataLen+maxSubflows*tcpInfoLen)
	}
	return s
}

// read returns the connection's counters now.
func (s *senderInfo) read() senderState {
	if s.raw == nil {
		return s.last
	}
	var st senderState
	ok := false
	s.raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return
		}
		ok = true
		st.acked, st.retransmits, st.rttUs = info.Bytes_acked, info.Total_retrans, info.Rtt
		if !s.mptcp {
			st.cwnd, st.ssthresh, st.minRTTUs = info.Snd_cwnd, info.Snd_ssthresh, info.Min_rtt
			st.dsackDups, st.reordSeen = info.Dsack_dups, info.Reord_seen
			return
		}
		s.readMPTCP(int(fd), &st)
	})
	if !ok {
		return s.last
	}
	// Counters never go back (a subflow that closed takes its
	// retransmissions with it).
	st.acked = max(st.acked, s.last.acked)
	st.retransmits = max(st.retransmits, s.last.retransmits)
	s.last = st
	return st
}

// readMPTCP replaces the first subflow's figures by the connection's.
func (s *senderInfo) readMPTCP(fd int, st *senderState) {
	var info [96]byte
	n := uint32(len(info))
	if getsockopt(fd, solMPTCP, mptcpInfo, info[:], &n) == nil && n > mptcpInfoSubflowsTotal {
		st.acked = binary.NativeEndian.Uint64(info[mptcpInfoBytesAcked:])
		st.subflows = int(info[mptcpInfoSubflowsTotal])
	}
	clear(s.buf[:subflowDataLen])
	binary.NativeEndian.PutUint32(s.buf[0:4], subflowDataLen)
	binary.NativeEndian.PutUint32(s.buf[12:16], uint32(tcpInfoLen))
	n = uint32(len(s.buf))
	if getsockopt(fd, solMPTCP, mptcpTCPInfo, s.buf, &n) != nil {
		return
	}
	count := int(binary.NativeEndian.Uint32(s.buf[4:8]))
	stride := int(binary.NativeEndian.Uint32(s.buf[12:16]))
	if stride <= 0 || stride > tcpInfoLen {
		return
	}
	var retransmits uint32
	for i := 0; i < min(count, maxSubflows); i++ {
		off := subflowDataLen + i*stride
		if off+stride > int(n) {
			break
		}
		var ti unix.TCPInfo
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&ti)), tcpInfoLen), s.buf[off:off+stride])
		retransmits += ti.Total_retrans
	}
	st.retransmits = retransmits
	st.subflows = max(st.subflows, count)
}

func getsockopt(fd, level, opt int, buf []byte, n *uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(n)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
