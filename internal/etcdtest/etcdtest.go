// Package etcdtest starts real etcd members in a test's process (etcd's
// embed package) on 127.0.0.1 with free ports and their data in the test's
// temporary directory. It is a test helper: the binary never links it
// (internal/layout checks).
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is a running etcd cluster of one or more members.
type Cluster struct {
	t       testing.TB
	members []*member
	// mu guards each member's etcd and stopped: a test stops a member
	// while a goroutine of its reads the cluster (GetPrefix).
	mu sync.Mutex
}

type member struct {
	name      string
	cfg       *embed.Config
	etcd      *embed.Etcd
	clientURL string
	stopped   bool
}

// Start starts an etcd cluster of n members on 127.0.0.1 and stops it
// when the test ends. It fails the test when the cluster has no leader
// within 20 s.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartAt(t, "127.0.0.1", n)
}

// StartAt is Start on the address host: called in a network namespace
// (testenv.InNamedNetns), the members listen in that namespace, on an
// address processes in other namespaces reach through a veth.
func StartAt(t testing.TB, host string, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var initial []string
	for i := range n {
		name := fmt.Sprintf("m%d", i)
		cfg := embed.NewConfig()
		cfg.Name = name
		cfg.Dir = t.TempDir()
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.Logger = "zap"
		peer, client := freeURL(t, host), freeURL(t, host)
		if n > 1 && host != "127.0.0.1" {
			peer = unixPeerURL(t, name)
		}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.InitialClusterToken = "etcdtest"
		initial = append(initial, name+"="+peer.String())
		c.members = append(c.members, &member{name: name, cfg: cfg, clientURL: client.String()})
	}
	for _, m := range c.members {
		m.cfg.InitialCluster = strings.Join(initial, ",")
	}
	t.Cleanup(c.stopAll)
	// Members of a new cluster wait for each other: start them all before
	// waiting for any.
	for _, m := range c.members {
		e, err := embed.StartEtcd(m.cfg)
		if err != nil {
			t.Fatalf("starting etcd member %s: %v", m.name, err)
		}
		m.etcd = e
	}
	for _, m := range c.members {
		select {
		case <-m.etcd.Server.ReadyNotify():
		case <-time.After(20 * time.Second):
			t.Fatalf("etcd member %s not ready within 20 s", m.name)
		}
	}
	return c
}

// freeURL is a URL on host with a port free now. (etcd binds it
// itself; another process could take the port in between, which on a test
// machine does not happen in practice.)
func freeURL(t testing.TB, host string) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

// unixPeerURL is a peer URL on a Unix socket, for members that listen in
// a network namespace: a member dials its peers from whichever thread of
// the test process runs the dial, most of them in the host's namespace,
// where the namespace's address does not exist; a socket in the file
// system is reached from every namespace. etcd takes the URL's host:port
// as the socket's path, relative to the working directory (the package's
// directory in a test); Go removes the socket when the member closes it.
func unixPeerURL(t testing.TB, name string) url.URL {
	t.Helper()
	path := fmt.Sprintf("etcdtest-%d-%s:1", os.Getpid(), name)
	os.Remove(path) // left by a test process of the same pid that was killed
	t.Cleanup(func() { os.Remove(path) })
	return url.URL{Scheme: "unix", Host: path}
}

// Endpoints are the client URLs of every member, stopped or not: what a
// client of the cluster is configured with.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.clientURL)
	}
	return out
}

// Leader is the index of the member that leads the cluster now (-1 when
// none does).
func (c *Cluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range c.members {
		if !m.stopped && m.etcd.Server.Leader() == m.etcd.Server.MemberID() {
			return i
		}
	}
	return -1
}

// Stop stops member i (it stays stopped).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	m := c.members[i]
	e := m.etcd
	if m.stopped || e == nil {
		c.mu.Unlock()
		return
	}
	m.stopped = true
	c.mu.Unlock()
	e.Close()
	<-e.Server.StopNotify()
}

// Restart starts the stopped member i again on its data and ports.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.mu.Lock()
	m := c.members[i]
	stopped := m.stopped
	c.mu.Unlock()
	if !stopped {
		return
	}
	e, err := embed.StartEtcd(m.cfg)
	if err != nil {
		c.t.Fatalf("restarting etcd member %s: %v", m.name, err)
	}
	c.mu.Lock()
	m.etcd, m.stopped = e, false
	c.mu.Unlock()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		c.t.Fatalf("etcd member %s not ready within 20 s of its restart", m.name)
	}
}

func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Stop(i)
	}
}

// GetPrefix reads every key under prefix and its value, linearizably,
// through a running member's server itself (no client connection: the
// members may listen in a network namespace the caller is not in).
func (c *Cluster) GetPrefix(ctx context.Context, prefix string) (map[string]string, error) {
	c.mu.Lock()
	var running *embed.Etcd
	for _, m := range c.members {
		if !m.stopped && m.etcd != nil {
			running = m.etcd
			break
		}
	}
	c.mu.Unlock()
	if running == nil {
		return nil, errors.New("etcdtest: no member runs")
	}
	// Outside the lock: a read waits for a quorum, and Stop must not wait
	// for it. A member stopped meanwhile answers with an error.
	resp, err := running.Server.Range(ctx, &etcdserverpb.RangeRequest{Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix))})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out, nil
}
