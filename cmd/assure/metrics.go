package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/shim/metrics"
)

// metricsCommand exposes the counters of every supervisor of the node to
// Prometheus: once on stdout, or served on /metrics with --listen.
func metricsCommand() *cli.Command {
	return &cli.Command{
		Name:      "metrics",
		Usage:     "Prometheus metrics of every container supervised on this node",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Usage: "serve /metrics on `ADDR` (e.g. :9474) instead of printing once"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "only containers of this containerd namespace"},
		},
		Action: func(c *cli.Context) error {
			reg := prometheus.NewRegistry()
			reg.MustRegister(&metrics.Collector{Namespace: c.String("namespace")})
			addr := c.String("listen")
			if addr == "" {
				if err := metrics.Write(c.App.Writer, reg); err != nil {
					return cli.Exit(fmt.Sprintf("metrics: %v", err), 1)
				}
				return nil
			}
			return serveMetrics(addr, reg)
		},
	}
}

// serveMetrics serves /metrics on addr until SIGINT or SIGTERM.
func serveMetrics(addr string, reg *prometheus.Registry) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return cli.Exit(fmt.Sprintf("metrics: %v", err), 1)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "assure: serving metrics on http://%s/metrics\n", l.Addr())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM)
	go func() {
		<-sigs
		srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return cli.Exit(fmt.Sprintf("metrics: %v", err), 1)
	}
	return nil
}
