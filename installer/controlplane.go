package installer

import (
	"time"

	"kforge.dev/kforge/api/v1alpha1"
	"kforge.dev/kforge/pki"
)

// How long the installer waits for daemons to become healthy.
const (
	EtcdWait      = 90 * time.Second
	APIServerWait = 60 * time.Second
	LBWait        = 30 * time.Second
	pollInterval  = 250 * time.Millisecond
)

// ControlPlane is what the control-plane phases share: the spec, the PKI
// (once the PKI phase has run) and the health prober.
type ControlPlane struct {
	Env     *Env
	Cluster *v1alpha1.Cluster
	// PKIDir overrides spec.pki.dir.
	PKIDir string
	// NewProber builds the prober once the PKI exists; NewNetProber when nil.
	NewProber func(c *v1alpha1.Cluster, inv *pki.Inventory) (Prober, error)

	inv    *pki.Inventory
	prober Prober
	// encryptionFile is the local copy of the Secrets encryption config.
	encryptionFile string
	// cleanup removes a dry run's temporary PKI copy.
	cleanup func()
	// rotation, when set, makes the run a certificate rotation.
	rotation *rotation
}

// Close removes temporary files.
func (cp *ControlPlane) Close() {
	if cp.cleanup != nil {
		cp.cleanup()
	}
}

// Inventory is the PKI inventory, after the PKI phase.
func (cp *ControlPlane) Inventory() *pki.Inventory { return cp.inv }

// lbHost is the host that runs `kforge lb`, or nil for an external LB.
func (cp *ControlPlane) lbHost() Host {
	name := cp.Cluster.Spec.LoadBalancer.Host
	if name == "" {
		return nil
	}
	for _, h := range cp.Env.Hosts {
		if h.Name() == name {
			return h
		}
	}
	return nil
}

// Phases returns the control-plane phases, in order: the PKI, then every
// role of Roles in start order, the wait for the API through the load
// balancer coming before the first role that is a client of it, then the
// admin kubeconfig.
func (cp *ControlPlane) Phases() []Phase {
	phases := []Phase{&PKIPhase{cp}}
	if cp.rotation != nil {
		phases = append(phases, &ReissuePhase{cp: cp, rot: cp.rotation})
	}
	phases = append(phases, &DistributePKIPhase{cp}, &ConfigsPhase{cp})
	waited := false
	for _, r := range Roles {
		if r.NeedsAPI && !waited {
			phases = append(phases, &WaitAPIPhase{cp})
			waited = true
		}
		phases = append(phases, &ServicePhase{cp: cp, Role: r})
	}
	if !waited {
		phases = append(phases, &WaitAPIPhase{cp})
	}
	if cp.rotation != nil {
		phases = append(phases, &ServedCertsPhase{cp: cp, rot: cp.rotation})
	}
	return append(phases, &KubeconfigPhase{cp})
}
