package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mifsec/mifsec/mif/cluster"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// clusterFlags are the gateway's flags of a cluster on etcd
// (docs/gateway-scale.md).
func clusterFlags() []cli.Flag {
	return []cli.Flag{
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "cluster-etcd", Usage: "share the address pools and the session registry with the other gateways through etcd at `URL[,URL]` (docs/gateway-scale.md)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cluster-name", Usage: "this gateway's `NAME` in the cluster, unique (default: the host name)"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "cluster-address", Usage: "`ADDR[,ADDR]` where clients reach this gateway, published to the other members (default: the --listen addresses that are not wildcards)"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "cluster-ttl", Value: 10 * time.Second, Usage: "how long the member and session keys of a gateway that died outlive it"}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "cluster-grace", Value: 5 * time.Minute, Usage: "how long a client's address stays its own after it left or its gateway died, for it to come back to"}),
	}
}

// parseCluster reads the cluster flags; a zero Config (no endpoints)
// without --cluster-etcd.
func parseCluster(c *cli.Context, listen []netip.Addr) (cluster.Config, error) {
	var cfg cluster.Config
	endpoints, err := parseEndpoints(c.StringSlice("cluster-etcd"))
	if err != nil || len(endpoints) == 0 {
		for _, f := range []string{"cluster-name", "cluster-address", "cluster-ttl", "cluster-grace"} {
			if err == nil && c.IsSet(f) {
				err = fmt.Errorf("--%s needs --cluster-etcd", f)
			}
		}
		return cfg, err
	}
	cfg.Endpoints = endpoints
	if cfg.Name = c.String("cluster-name"); cfg.Name == "" {
		if cfg.Name, err = os.Hostname(); err != nil {
			return cfg, fmt.Errorf("--cluster-name: none given and no host name: %w", err)
		}
	}
	if cfg.Addresses, err = parseAddrs(c.StringSlice("cluster-address")); err != nil {
		return cfg, fmt.Errorf("--cluster-address: %w", err)
	}
	if len(cfg.Addresses) == 0 {
		cfg.Addresses = slices.DeleteFunc(slices.Clone(listen), netip.Addr.IsUnspecified)
	}
	cfg.MemberTTL, cfg.Grace = c.Duration("cluster-ttl"), c.Duration("cluster-grace")
	if cfg.MemberTTL < 2*time.Second || cfg.Grace < 2*time.Second {
		return cfg, errors.New("--cluster-ttl and --cluster-grace must be at least 2 s (etcd's shortest lease)")
	}
	return cfg, nil
}

// parseEndpoints parses etcd client URLs given as repeated flags, each a
// comma-separated list. A URL may not carry credentials: it is shown in
// `mifsec status`.
func parseEndpoints(list []string) ([]string, error) {
	var out []string
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			s = strings.TrimSpace(s)
			u, err := url.Parse(s)
			switch {
			case err != nil:
				return nil, fmt.Errorf("--cluster-etcd: %w", err)
			case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
				return nil, fmt.Errorf("--cluster-etcd: %q is not an http(s)://HOST:PORT URL", s)
			case u.User != nil:
				return nil, errors.New("--cluster-etcd: a URL with credentials (they would show in mifsec status)")
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// printCluster prints every member of the cluster with its clients, as
// etcd has them (`mifsec status --cluster`): from the etcd of
// --cluster-etcd, or of the running gateway that is a member.
func printCluster(c *cli.Context) error {
	endpoints, err := parseEndpoints(c.StringSlice("cluster-etcd"))
	if err != nil {
		return err
	}
	if len(endpoints) == 0 {
		running, err := instanceStatuses(c)
		if err != nil {
			return fmt.Errorf("--cluster without --cluster-etcd asks a running gateway for its etcd: %w", err)
		}
		for _, raw := range running {
			var st struct {
				Cluster *cluster.Status `json:"cluster"`
			}
			if json.Unmarshal(raw, &st) == nil && st.Cluster != nil {
				endpoints = st.Cluster.Endpoints
				break
			}
		}
		if len(endpoints) == 0 {
			return errors.New("--cluster: no running gateway is a member of a cluster; give --cluster-etcd")
		}
	}
	ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
	defer cancel()
	v, err := cluster.Read(ctx, endpoints, "")
	if err != nil {
		return err
	}
	if c.Bool("json") {
		out, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		fmt.Println(string(out))
		return nil
	}
	fmt.Printf("cluster on etcd %s: %d gateways, %d clients\n", strings.Join(endpoints, ","), len(v.Members), len(v.Sessions))
	for _, m := range v.Members {
		fmt.Printf("  gateway %s at %v: %d clients (as of %s)\n", m.Name, m.Addresses, m.Clients, m.Updated.Format(time.RFC3339))
		for _, s := range v.Sessions {
			if s.Gateway == m.Name {
				fmt.Printf("    %s, addresses %s, since %s\n", s.ID, strings.Join(s.Addresses, ", "), s.Since.Format(time.RFC3339))
			}
		}
	}
	return nil
}
