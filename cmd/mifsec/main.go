// Command mifsec is a userspace IPsec VPN for hosts with several network
// interfaces. See the README for the commands it offers.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newApp() *cli.App {
	return &cli.App{
		Name:    "mifsec",
		Usage:   "IPsec VPN that uses every network interface at once",
		Version: buildVersion(),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile to `FILE` while running"},
			&cli.StringFlag{Name: "heapprofile", Usage: "write a heap profile to `FILE` (replacing it) at each SIGUSR2"},
		},
		Before: func(c *cli.Context) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
			if path := c.String("cpuprofile"); path != "" {
				f, err := os.Create(path)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					f.Close()
					return fmt.Errorf("--cpuprofile: %w", err)
				}
			}
			if path := c.String("heapprofile"); path != "" {
				// Every 4 KiB allocated, rather than 512 KiB: per-client
				// structures of a few hundred bytes show up by name.
				runtime.MemProfileRate = 4096
				heapProfile.Store(&path)
			}
			return nil
		},
		After: func(c *cli.Context) error {
			if c.String("cpuprofile") != "" {
				pprof.StopCPUProfile()
			}
			return nil
		},
		Commands: commands(),
	}
}

// onHangup, when set, is what SIGHUP does (the gateway reloads its keys);
// otherwise SIGHUP (a closed terminal) stops the command as SIGTERM does,
// so that `mifsec connect` still deletes its IKE SA and its TUN device.
var onHangup atomic.Pointer[func()]

// heapProfile, when set, is where SIGUSR2 writes a heap profile
// (--heapprofile): a gateway's memory per client is measured with its
// clients up, not at its exit, when they are gone.
var heapProfile atomic.Pointer[string]

// onDrain, when set, is what SIGUSR1 does (the gateway drains,
// `mifsec gateway drain`); otherwise SIGUSR1 is ignored.
var onDrain atomic.Pointer[func()]

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, hangUp := context.WithCancel(ctx)
	defer hangUp()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for sig := range hup {
			if sig == syscall.SIGUSR2 {
				if path := heapProfile.Load(); path != nil {
					if err := writeHeapProfile(*path); err != nil {
						slog.Warn("--heapprofile", "err", err)
					}
				}
				continue
			}
			if sig == syscall.SIGUSR1 {
				if f := onDrain.Load(); f != nil {
					(*f)()
				}
				continue
			}
			if f := onHangup.Load(); f != nil {
				(*f)()
				continue
			}
			hangUp()
		}
	}()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "mifsec:", err)
		os.Exit(1)
	}
}

// writeHeapProfile writes the heap profile after a collection, so that
// its in-use figures are the live heap.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
