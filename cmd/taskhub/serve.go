package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/httpapi"
	"github.com/taskhub/taskhub/samples"
)

// apiKeyEnv names the environment variable holding an API key of serve.
const apiKeyEnv = "TASKHUB_API_KEY"

func serveCommand() *cobra.Command {
	var (
		addr  string
		keys  []string
		drain time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a worker with the samples and the Durable Functions HTTP management API",
		Long: `serve runs a worker on the hub (by default ./taskhub.db) with the samples
registered, and serves the Durable Functions instance-management HTTP API under
` + httpapi.BasePathDefault + `: start orchestrations, query their status
and history, raise events, terminate, suspend, resume, restart and purge;
and signal, read and list the sample entities (Counter, Account).

Requests must carry an API key (--key, repeatable, or ` + apiKeyEnv + `) in the
x-functions-key header, as Authorization: Bearer <key>, or in the code query
parameter. Without a key the API is open, so serve then listens only on a
loopback address. SIGINT or SIGTERM stops the server, then the worker.`,
		Example: `  taskhub serve
  curl -X POST localhost:7071` + httpapi.BasePathDefault + `/orchestrators/HelloSequence
  ` + apiKeyEnv + `=s3cret taskhub serve --addr :7071`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := apiKeys(keys, os.Getenv(apiKeyEnv))
			if err != nil {
				return err
			}
			if err := httpapi.ValidateListenAddress(addr, len(keys) > 0); err != nil {
				if errors.Is(err, httpapi.ErrUnauthenticatedListen) {
					return fmt.Errorf("--addr: %w; pass --key or set %s to listen on other addresses", err, apiKeyEnv)
				}
				return fmt.Errorf("--addr: %w", err)
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			for _, k := range keys {
				if len(k) < 16 {
					logger.Warn("an API key is shorter than 16 characters; use a long random key")
					break
				}
			}
			return serve(cmd, addr, keys, drain, logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:7071", "listen address (host:port); without a key it must be a loopback address")
	f.StringArrayVar(&keys, "key", nil, "accepted API key (repeatable; also "+apiKeyEnv+")")
	f.DurationVar(&drain, "drain-timeout", 30*time.Second, "how long a graceful stop waits for requests and running work")
	addWorkerFlags(cmd)
	return cmd
}

// serveMux serves the management API and, at /metrics, the worker's
// Prometheus metrics (open like a health endpoint: they carry no instance
// data).
func serveMux(api http.Handler, metrics *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	mux.Handle("/", api)
	return mux
}

// serveMetrics serves /metrics on its own address (taskhub worker).
func serveMetrics(addr string, metrics *prometheus.Registry, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Warn("metrics server stopped", "err", err)
		}
	}()
	return func() { _ = srv.Close() }, nil
}

// apiKeys merges the --key flags and the environment variable's key.
func apiKeys(flags []string, env string) ([]string, error) {
	var keys []string
	for _, k := range flags {
		if strings.TrimSpace(k) == "" {
			return nil, errors.New("--key: an API key must not be empty")
		}
		keys = append(keys, k)
	}
	if k := strings.TrimSpace(env); k != "" {
		keys = append(keys, k)
	}
	return keys, nil
}

func serve(cmd *cobra.Command, addr string, keys []string, drain time.Duration, logger *slog.Logger) error {
	opts, err := workerOptions(cmd, logger)
	if err != nil {
		return err
	}
	metrics := prometheus.NewRegistry()
	opts.MetricsRegisterer = metrics
	be, err := openBackend(cmd)
	if err != nil {
		return err
	}
	defer be.Close()
	reg := taskhub.NewRegistry()
	if err := samples.Register(reg); err != nil {
		return err
	}
	w, err := taskhub.NewWorker(be, reg, opts)
	if err != nil {
		return err
	}
	// Bind before starting the worker, so that a taken port fails fast.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	ctx := cmd.Context()
	if err := w.Start(ctx); err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           serveMux(httpapi.New(w.Client(), httpapi.Options{Keys: keys, Logger: logger}), metrics),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	auth := "no API key: loopback only"
	if len(keys) > 0 {
		auth = fmt.Sprintf("%d API key(s)", len(keys))
	}
	fmt.Fprintf(cmd.OutOrStdout(), "worker %s serving http://%s%s (%s); SIGINT or SIGTERM stops it\n",
		w.ID(), ln.Addr(), httpapi.BasePathDefault, auth)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
		serveErr = fmt.Errorf("serve: %w", serveErr)
	}
	// Stop taking requests first, so that none reaches a stopping worker;
	// then stop the worker, which hands its partitions over.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	shutdownErr := srv.Shutdown(stopCtx)
	if shutdownErr != nil {
		shutdownErr = fmt.Errorf("http shutdown: %w", shutdownErr)
	}
	stopErr := w.Stop(stopCtx)
	return errors.Join(serveErr, shutdownErr, stopErr)
}
