package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mifsec/mifsec/bench/labnet"
	"github.com/mifsec/mifsec/bench/peers"
	benchreport "github.com/mifsec/mifsec/bench/report"
	"github.com/mifsec/mifsec/internal/testenv"
	"github.com/mifsec/mifsec/mif"
)

// requireLab skips unless the test can build network namespaces and run
// traffic through them.
func requireLab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and TUN devices")
	}
	if err := checkTrafficTools(); err != nil {
		t.Skipf("missing tool: %v", err)
	}
}

func newTestLab(t *testing.T, ctx context.Context) *labnet.Lab {
	t.Helper()
	lab, err := labnet.NewLab(ctx, testLog{t})
	if err != nil {
		t.Fatalf("NewLab: %v", err)
	}
	t.Cleanup(func() { lab.Close() })
	return lab
}

// assertCleanedUp checks that no namespace of the lab remains and that no
// process it started is alive.
func assertCleanedUp(t *testing.T, lab *labnet.Lab) {
	t.Helper()
	out, err := labnet.RunCommand(context.Background(), "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, lab.NamespacePrefix()) {
		t.Errorf("namespaces with prefix %s remain:\n%s", lab.NamespacePrefix(), out)
	}
	for _, pid := range lab.StartedPIDs() {
		if labnet.ProcessAlive(pid) {
			t.Errorf("process %d started by the lab is still alive", pid)
		}
	}
	sockets, _ := filepath.Glob(filepath.Join(labnet.WireguardSocketDir, "wgb"+strconv.Itoa(lab.Owner())+"*"))
	if len(sockets) > 0 {
		t.Errorf("wireguard-go sockets remain: %v", sockets)
	}
}

func TestThroughputVethAndWireguardGo(t *testing.T) {
	requireLab(t)
	if _, err := exec.LookPath("wg"); err != nil {
		t.Skip("wg not found: apt-get install wireguard-tools")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wireguardGo, err := peers.WireguardGo(ctx, "")
	if err != nil {
		t.Skipf("wireguard-go unavailable: %v", err)
	}

	lab := newTestLab(t, ctx)
	report, err := RunThroughput(ctx, lab, ThroughputConfig{
		Duration:    2 * time.Second,
		Peers:       []string{"veth", "wireguard-go"},
		PeerOptions: peers.PeerOptions{WireguardGoPath: wireguardGo},
		Log:         testLog{t},
	})
	if err != nil {
		t.Fatalf("RunThroughput: %v", err)
	}
	if err := lab.Close(); err != nil {
		t.Errorf("Lab.Close: %v", err)
	}
	if len(lab.StartedPIDs()) == 0 {
		t.Error("the lab recorded no started processes")
	}
	assertCleanedUp(t, lab)

	if len(report.Peers) != 2 {
		t.Fatalf("report has %d peers, want 2: %+v", len(report.Peers), report.Peers)
	}
	for _, p := range report.Peers {
		if p.Skipped != "" || len(p.Errors) > 0 {
			t.Errorf("%s: skipped %q, errors %q", p.Name, p.Skipped, p.Errors)
			continue
		}
		if p.UpMbps == nil || *p.UpMbps <= 0 || p.DownMbps == nil || *p.DownMbps <= 0 {
			t.Errorf("%s: up %s down %s Mbit/s, want both > 0", p.Name, benchreport.FormatFloat(p.UpMbps, 1), benchreport.FormatFloat(p.DownMbps, 1))
		}
	}
	var table strings.Builder
	if err := report.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
}

func TestThroughputMifsecIKE(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mifsec := testenv.MifsecBinary(t)

	lab := newTestLab(t, ctx)
	report, err := RunThroughput(ctx, lab, ThroughputConfig{
		Duration:    2 * time.Second,
		Peers:       []string{"mifsec-ike"},
		PeerOptions: peers.PeerOptions{MifsecPath: mifsec},
		Log:         testLog{t},
	})
	if err != nil {
		t.Fatalf("RunThroughput: %v", err)
	}
	if err := lab.Close(); err != nil {
		t.Errorf("Lab.Close: %v", err)
	}
	assertCleanedUp(t, lab)
	sockets, _ := filepath.Glob(mif.ControlSocket("mbk" + strconv.Itoa(lab.Owner()) + "*"))
	if len(sockets) > 0 {
		t.Errorf("mifsec control sockets remain: %v", sockets)
	}

	if len(report.Peers) != 1 {
		t.Fatalf("report has %d peers, want 1: %+v", len(report.Peers), report.Peers)
	}
	p := report.Peers[0]
	if p.Skipped != "" || len(p.Errors) > 0 {
		t.Fatalf("%s: skipped %q, errors %q", p.Name, p.Skipped, p.Errors)
	}
	if p.UpMbps == nil || *p.UpMbps <= 0 || p.DownMbps == nil || *p.DownMbps <= 0 {
		t.Errorf("%s: up %s down %s Mbit/s, want both > 0", p.Name, benchreport.FormatFloat(p.UpMbps, 1), benchreport.FormatFloat(p.DownMbps, 1))
	}
}

func TestThroughputCancelledCleansUp(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lab := newTestLab(t, ctx)
	// Cancel while the 30 s TCP flow runs.
	flowing := make(chan struct{})
	log := &signalLog{t: t, marker: "veth: TCP up", seen: flowing}
	go func() {
		select {
		case <-flowing:
			time.Sleep(time.Second)
		case <-time.After(20 * time.Second):
		}
		cancel()
	}()
	start := time.Now()
	report, err := RunThroughput(ctx, lab, ThroughputConfig{Duration: 30 * time.Second, Peers: []string{"veth"}, Log: log})
	if err == nil {
		t.Fatal("RunThroughput after cancel returned no error")
	}
	if elapsed := time.Since(start); elapsed > 25*time.Second {
		t.Errorf("RunThroughput took %v after the cancel, want it to stop promptly", elapsed)
	}
	if report == nil || len(report.Peers) != 1 || len(report.Peers[0].Errors) == 0 {
		t.Errorf("report after cancel = %+v, want the peer with an interrupted error", report)
	}
	if err := lab.Close(); err != nil {
		t.Errorf("Lab.Close: %v", err)
	}
	assertCleanedUp(t, lab)
}

func TestNewLabRemovesStaleNamespaces(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// PID 0 never owns a lab: this stands for a crashed run's namespace,
	// with a process still running inside.
	stale := labnet.NamespacePrefix + "0-crashed"
	if _, err := labnet.RunCommand(ctx, "ip", "netns", "add", stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { labnet.DeleteNamespace(stale) })
	sleeper := exec.Command("ip", "netns", "exec", stale, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	// Start returns before ip(8) has entered the namespace: wait until the
	// namespace lists the process, or there is nothing yet to kill.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		out, _ := labnet.RunCommand(ctx, "ip", "netns", "pids", stale)
		if strings.TrimSpace(out) != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the process did not enter namespace %s", stale)
		}
	}

	newTestLab(t, ctx)

	if _, err := os.Stat(filepath.Join("/run/netns", stale)); err == nil {
		t.Errorf("stale namespace %s was not removed", stale)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		sleeper.Process.Kill()
		t.Error("the process inside the stale namespace was not killed")
	}
}

// signalLog is a testLog that closes seen once a line contains marker.
type signalLog struct {
	t      *testing.T
	marker string
	seen   chan struct{}
	once   sync.Once
}

func (l *signalLog) Write(p []byte) (int, error) {
	if strings.Contains(string(p), l.marker) {
		l.once.Do(func() { close(l.seen) })
	}
	return testLog{l.t}.Write(p)
}

// testLog sends progress messages to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Helper()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
