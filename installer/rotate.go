package installer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
	"time"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/pki"
)

// RotateOptions configure `kforge cert rotate`: Up's options (the same
// hosts, reporter, journal and dry run) and which leaves to reissue.
type RotateOptions struct {
	Up UpOptions
	// Hosts and ExpiringWithin narrow the leaves (pki.ReissueOptions).
	Hosts          []string
	ExpiringWithin time.Duration
}

// RotateResult is what a rotation did.
type RotateResult struct {
	// Certs are the leaves reissued (in a dry run, those that would be,
	// without new serials).
	Certs []pki.Rotated
	Up    *UpResult
}

// RotateCerts reissues leaf certificates and rolls them out with `kforge
// up`'s own converge: the PKI phase checks the directory, a reissue phase
// replaces the chosen leaves (new keys, the same CAs) and rebuilds the
// kubeconfigs, distribute-pki uploads what changed, and each role's phase
// restarts only daemons whose changed files they read at start, one
// master at a time behind the health gates and a third of the workers at
// a time; daemons that reload their certificates (etcd, the apiservers,
// the agent API) keep running, and a last phase waits until each serves
// its new certificate. The admin kubeconfig beside cluster.yaml is
// rewritten. Nothing is reissued when the PKI is incomplete (`kforge up`
// first) or a named host is unknown.
func RotateCerts(ctx context.Context, o RotateOptions) (*RotateResult, error) {
	c := o.Up.Cluster
	inv, err := pki.NewInventory(PKISpec(c), "")
	if err != nil {
		return nil, err
	}
	ropts := pki.ReissueOptions{Hosts: o.Hosts, ExpiringWithin: o.ExpiringWithin}
	// The plan, and the check that the PKI is complete, before anything.
	plan := ropts
	plan.DryRun = true
	certs, err := pki.Reissue(ctx, inv, plan)
	if err != nil {
		return nil, err
	}
	res := &RotateResult{Certs: certs}
	if len(certs) == 0 {
		return res, nil
	}
	rot := &rotation{opts: ropts, planned: len(certs)}
	o.Up.rotation = rot
	o.Up.Command = "kforge cert rotate"
	up, err := Up(ctx, o.Up)
	res.Up = up
	if rot.done != nil {
		res.Certs = rot.done
	}
	return res, err
}

// rotation is what RotateCerts adds to an Up run.
type rotation struct {
	opts    pki.ReissueOptions
	planned int // leaves the plan chose
	done    []pki.Rotated
}

// ReissuePhase replaces leaf certificates in the PKI directory (in a dry
// run, the PKI phase's temporary copy), after the PKI phase checked it.
type ReissuePhase struct {
	cp  *ControlPlane
	rot *rotation
}

func (p *ReissuePhase) ID() string    { return "reissue" }
func (p *ReissuePhase) Title() string { return "Reissue leaf certificates (locally)" }

func (p *ReissuePhase) Run(ctx context.Context) error {
	done, err := pki.Reissue(ctx, p.cp.inv, p.rot.opts)
	if err != nil {
		return err
	}
	if !p.cp.Env.Gate.DryRun() {
		p.rot.done = done
	}
	return nil
}

// servedCertReader is a Prober that can read the certificate a daemon
// serves (NetProber).
type servedCertReader interface {
	ServedCertificate(ctx context.Context, addr string) (*x509.Certificate, error)
}

// ServedCertsPhase waits until every daemon that reloads a reissued
// serving certificate by itself serves the new one: etcd's client port,
// each apiserver, each agent API. A daemon that keeps the old one fails
// the rotation (after the role's wait), naming it.
type ServedCertsPhase struct {
	cp  *ControlPlane
	rot *rotation
}

func (p *ServedCertsPhase) ID() string    { return "served-certs" }
func (p *ServedCertsPhase) Title() string { return "Reloaded certificates served" }

// servedCert is a serving certificate a daemon reloads, and its port.
var servedCerts = []struct {
	name string
	port int
	wait time.Duration
}{
	{"etcd-server", 2379, EtcdWait},
	{"apiserver", 6443, APIServerWait},
	{"agent-server", 10250, APIServerWait},
}

func (p *ServedCertsPhase) ShouldRun() (bool, string) {
	if p.cp.Env.Gate.DryRun() {
		return false, "dry run"
	}
	if _, ok := p.cp.prober.(servedCertReader); !ok {
		return false, "the prober cannot read served certificates"
	}
	return true, ""
}

func (p *ServedCertsPhase) Run(ctx context.Context) error {
	reader := p.cp.prober.(servedCertReader)
	want := map[string][]pki.Rotated{} // host → its reissued serving certs
	for _, r := range p.rot.done {
		host, name, ok := strings.Cut(r.ID, "/")
		if !ok {
			continue
		}
		for _, sc := range servedCerts {
			if sc.name == name {
				want[host] = append(want[host], r)
			}
		}
	}
	var hosts []Host
	for _, h := range p.cp.Env.Hosts {
		if len(want[h.Name()]) > 0 {
			hosts = append(hosts, h)
		}
	}
	return p.cp.Env.Each(ctx, p, hosts, func(ctx context.Context, h Host) (string, error) {
		var got []string
		for _, r := range want[h.Name()] {
			_, name, _ := strings.Cut(r.ID, "/")
			for _, sc := range servedCerts {
				if sc.name != name {
					continue
				}
				addr := v1alpha1.HostPort(h.Address(), sc.port)
				var last string
				err := waitFor(ctx, sc.wait, pollInterval, func(ctx context.Context) error {
					crt, err := reader.ServedCertificate(ctx, addr)
					if err != nil {
						return err
					}
					if last = crt.SerialNumber.String(); last != r.NewSerial {
						return fmt.Errorf("%s still serves serial %s, not the new %s", addr, last, r.NewSerial)
					}
					return nil
				})
				if err != nil {
					return "", err
				}
				got = append(got, fmt.Sprintf("%s on :%d", path.Base(r.ID), sc.port))
			}
		}
		return "serving the new " + strings.Join(got, ", "), nil
	})
}

// ServedCertificate handshakes with addr and returns the certificate it
// serves, verified against the etcd CA (port 2379, presenting the etcd
// client certificate) or the cluster CA (any other port).
func (p *NetProber) ServedCertificate(ctx context.Context, addr string) (*x509.Certificate, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	cfg := p.apiTLS
	if port == "2379" {
		cfg = p.etcdTLS
	}
	cfg = cfg.Clone()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	raw, err := p.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		cfg.ServerName = host
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New(addr + ": no certificate")
	}
	return certs[0], nil
}
