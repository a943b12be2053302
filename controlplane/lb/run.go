package lb

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Run is the lb role: it starts a Balancer from cfg, adds the Go and
// process collectors to its registry, and runs until ctx is cancelled
// (then closes it, draining connections) or the Balancer fails.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	b, err := New(cfg, log)
	if err != nil {
		return err
	}
	b.Registry().MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer b.Close()
	attrs := []any{"listen", b.Addr().String(), "backends", cfg.Backends}
	if a := b.MetricsAddr(); a != nil {
		attrs = append(attrs, "metrics", a.String())
	}
	b.log.Warn("load balancer running", attrs...)
	select {
	case err := <-b.Err():
		return err
	case <-ctx.Done():
		b.log.Warn("shutting down", "grace", cfg.ShutdownGracePeriod)
		return nil
	}
}
