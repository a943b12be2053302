package apiserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"kforge.dev/kforge/controlplane/apiserver/storage"
	"kforge.dev/kforge/controlplane/roleconfig"
	"kforge.dev/kforge/internal/certreload"
)

// Instance is the running apiserver role: an etcd client over mutual TLS,
// the Server over it, and the HTTPS listener. Create it with NewInstance,
// then Start it; it runs until Close.
type Instance struct {
	cfg *Config
	log *slog.Logger

	serving *tls.Config
	etcdTLS *tls.Config
	nodeTLS *tls.Config // toward the node agents; nil without kubeletClient
	// storeOpts transform values at rest (encryption).
	storeOpts []storage.Option
	identity  Identity
	// reload re-reads the serving and kubelet client certificates when
	// their files change (the etcd client reads its own per handshake).
	reload *certreload.Watcher

	etcd *clientv3.Client
	srv  *Server
	ln   net.Listener

	readyc    chan struct{} // closed once bootstrapped and serving
	errc      chan error    // the first fatal error; buffered
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the bootstrap-and-serve goroutine
	closeOnce sync.Once
}

// NewInstance validates cfg and reads its certificate files; nothing is
// started or bound. log nil discards logs.
func NewInstance(cfg *Config, log *slog.Logger) (*Instance, error) {
	if err := roleconfig.Validate("apiserver", cfg); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "apiserver")

	pair, err := certreload.NewKeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("apiserver: serving certificate: %w", err)
	}
	clientCAs, err := certreload.NewCABundle(cfg.TLS.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("apiserver: tls.clientCAFile: %w", err)
	}
	reload := &certreload.Watcher{Items: []certreload.Reloader{pair, clientCAs}, Log: log}
	etcdTLS, err := transport.TLSInfo{
		CertFile:      cfg.Etcd.CertFile,
		KeyFile:       cfg.Etcd.KeyFile,
		TrustedCAFile: cfg.Etcd.CAFile,
	}.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("apiserver: etcd client TLS: %w", err)
	}
	var tokens *TokenIssuer
	if cfg.ServiceAccount.KeyFile != "" {
		if tokens, err = LoadTokenIssuer(cfg.ServiceAccount.IssuerOrDefault(), cfg.ServiceAccount.Audiences,
			cfg.ServiceAccount.KeyFile, cfg.ServiceAccount.PublicKeyFile); err != nil {
			return nil, fmt.Errorf("apiserver: %w", err)
		}
	}
	var nodeTLS *tls.Config
	if kc := cfg.KubeletClient; kc.CertFile != "" {
		ca := kc.CAFile
		if ca == "" {
			ca = cfg.TLS.ClientCAFile
		}
		var nodePair *certreload.KeyPair
		if nodeTLS, nodePair, err = nodeClientTLS(kc.CertFile, kc.KeyFile, ca); err != nil {
			return nil, err
		}
		reload.Items = append(reload.Items, nodePair)
	}
	entries, err := cfg.Encryption.Load()
	if err != nil {
		return nil, fmt.Errorf("apiserver: encryption: %w", err)
	}
	storeOpts, err := encryptionOptions(entries, DefaultResources())
	if err != nil {
		return nil, err
	}
	return &Instance{
		nodeTLS:   nodeTLS,
		storeOpts: storeOpts,
		identity:  Identity{ClientCAPool: clientCAs.Pool, ServiceAccount: tokens},
		cfg:       cfg,
		log:       log,
		reload:    reload,
		serving: certreload.ServerConfig(&tls.Config{
			// The CA names are sent to the client; the Server verifies
			// the certificate (Identity.ClientCAPool), so one that is
			// missing, expired or from another CA gets a 401 Status, not
			// a failed handshake. Both follow the reloaded bundle.
			ClientAuth: tls.RequestClientCert,
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"},
		}, pair, clientCAs),
		etcdTLS: etcdTLS,
		readyc:  make(chan struct{}),
		errc:    make(chan error, 1),
	}, nil
}

// Start binds the listener (unless the config carries one), creates the
// etcd client and the Server, and returns. Bootstrapping (which waits for
// etcd) and serving go on in the background: wait on ReadyNotify. On
// error everything Start opened is closed. ctx only bounds Start.
func (in *Instance) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ln := in.cfg.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", in.cfg.BindAddress)
		if err != nil {
			return fmt.Errorf("apiserver: %w", err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   in.cfg.Etcd.Endpoints,
		TLS:         in.etcdTLS,
		DialTimeout: in.cfg.Etcd.DialTimeout,
		Logger:      zap.NewNop(),
		Context:     context.Background(),
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("apiserver: etcd client: %w", err)
	}
	srv, err := New(Options{
		Store:          storage.New(cli, in.storeOpts...),
		EventTTL:       in.cfg.EventTTL,
		ServiceCIDR:    in.cfg.ServiceCIDR,
		Advertise:      in.cfg.Advertise(),
		Logger:         in.log,
		Version:        in.cfg.Version,
		Commit:         in.cfg.Commit,
		DisableMetrics: !in.cfg.Metrics.Enabled,
		Limits:         in.cfg.Limits,
		Identity:       in.identity,
		NodeClientTLS:  in.nodeTLS,
	})
	if err != nil {
		cli.Close()
		ln.Close()
		return err
	}
	in.ln, in.etcd, in.srv = ln, cli, srv

	runCtx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	in.wg.Go(func() { in.run(runCtx) })
	in.wg.Go(func() { in.reload.Run(runCtx) })
	return nil
}

// run bootstraps (retrying while etcd is unreachable) and then serves
// until ctx ends.
func (in *Instance) run(ctx context.Context) {
	if err := in.bootstrap(ctx); err != nil {
		in.ln.Close()
		return // ctx ended
	}
	close(in.readyc)
	in.log.Info("serving", "address", in.ln.Addr().String())
	if err := in.srv.Serve(ctx, in.ln, in.serving); err != nil {
		in.fail(err)
	}
}

// bootstrap creates the initial namespaces, retrying with backoff until
// it works or ctx ends: the apiserver may start before etcd has quorum.
func (in *Instance) bootstrap(ctx context.Context) error {
	wait := 200 * time.Millisecond
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := in.srv.Bootstrap(attempt)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		in.log.Warn("bootstrap failed; retrying (is etcd up?)", "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (in *Instance) fail(err error) {
	select {
	case in.errc <- err:
	default:
	}
}

// ReadyNotify is closed once the initial namespaces exist and the API is
// being served.
func (in *Instance) ReadyNotify() <-chan struct{} { return in.readyc }

// Err delivers the first fatal error (serving failed). The caller should Close.
func (in *Instance) Err() <-chan error { return in.errc }

// Addr is the bound address of the API listener.
func (in *Instance) Addr() net.Addr { return in.ln.Addr() }

// Server is the API server, for tests.
func (in *Instance) Server() *Server { return in.srv }

// Close stops the instance; it is safe to call more than once. In order:
//  1. end the serving context: the listener closes, in-flight requests
//     finish (up to 10 s), open watches end and are waited for (see
//     Server.Serve); a bootstrap still retrying gives up;
//  2. wait for the serving goroutine and the certificate watcher;
//  3. close the etcd client.
func (in *Instance) Close() {
	in.closeOnce.Do(func() {
		if in.cancel != nil {
			in.cancel()
		}
		in.wg.Wait()
		if in.etcd != nil {
			if err := in.etcd.Close(); err != nil && !errors.Is(err, context.Canceled) {
				in.log.Debug("closing the etcd client", "err", err)
			}
		}
		in.log.Info("apiserver closed")
	})
}

// Run starts an instance, logs when it is ready and runs it until ctx is
// cancelled (then it shuts down in order and returns nil) or it fails.
func Run(ctx context.Context, cfg *Config, log *slog.Logger) error {
	in, err := NewInstance(cfg, log)
	if err != nil {
		return err
	}
	if err := in.Start(ctx); err != nil {
		return err
	}
	defer in.Close()
	select {
	case <-in.ReadyNotify():
		in.log.Warn("apiserver ready", "address", in.Addr().String(), "etcd", cfg.Etcd.Endpoints)
	case err := <-in.Err():
		return err
	case <-ctx.Done():
		return nil
	}
	select {
	case err := <-in.Err():
		return err
	case <-ctx.Done():
		in.log.Warn("shutting down")
		return nil
	}
}
