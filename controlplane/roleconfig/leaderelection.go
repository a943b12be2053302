package roleconfig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Leader-election defaults shared by the leader-elected roles (scheduler,
// controller manager): upstream's 15s/10s/2s in kube-system.
const (
	DefaultLeaseNamespace = "kube-system"
	DefaultLeaseDuration  = 15 * time.Second
	DefaultRenewDeadline  = 10 * time.Second
	DefaultRetryPeriod    = 2 * time.Second
)

// LeaderElection configures the Lease that lets one of several instances
// of a role (one per master) act at a time.
type LeaderElection struct {
	// Enabled is true by default; turn it off only when a single instance
	// runs.
	Enabled       bool          `yaml:"enabled" json:"enabled"`
	LeaseName     string        `yaml:"leaseName" json:"leaseName"`
	Namespace     string        `yaml:"namespace" json:"namespace"`
	LeaseDuration time.Duration `yaml:"leaseDuration" json:"leaseDuration"`
	RenewDeadline time.Duration `yaml:"renewDeadline" json:"renewDeadline"`
	RetryPeriod   time.Duration `yaml:"retryPeriod" json:"retryPeriod"`
	// Identity names this instance in the Lease; the host name plus a
	// random suffix when empty.
	Identity string `yaml:"identity,omitempty" json:"identity,omitempty"`
}

// DefaultLeaderElection is leader election on, with the shared defaults
// and the role's Lease name.
func DefaultLeaderElection(leaseName string) LeaderElection {
	return LeaderElection{
		Enabled: true, LeaseName: leaseName, Namespace: DefaultLeaseNamespace,
		LeaseDuration: DefaultLeaseDuration, RenewDeadline: DefaultRenewDeadline, RetryPeriod: DefaultRetryPeriod,
	}
}

// Validate returns the problems of an enabled configuration under
// fldPath: the rules client-go's leaderelection enforces.
func (le LeaderElection) Validate(fldPath *field.Path) field.ErrorList {
	if !le.Enabled {
		return nil
	}
	var errs field.ErrorList
	if le.LeaseName == "" {
		errs = append(errs, field.Required(fldPath.Child("leaseName"), ""))
	}
	if le.Namespace == "" {
		errs = append(errs, field.Required(fldPath.Child("namespace"), ""))
	}
	if le.RetryPeriod <= 0 {
		errs = append(errs, field.Invalid(fldPath.Child("retryPeriod"), le.RetryPeriod.String(), "must be positive"))
	}
	if le.RenewDeadline <= time.Duration(1.2*float64(le.RetryPeriod)) {
		errs = append(errs, field.Invalid(fldPath.Child("renewDeadline"), le.RenewDeadline.String(),
			fmt.Sprintf("must be longer than 1.2 × retryPeriod (%s)", le.RetryPeriod)))
	}
	if le.LeaseDuration <= le.RenewDeadline {
		errs = append(errs, field.Invalid(fldPath.Child("leaseDuration"), le.LeaseDuration.String(),
			fmt.Sprintf("must be longer than renewDeadline (%s)", le.RenewDeadline)))
	}
	return errs
}

// ID is this instance's name in the Lease: Identity, or the host name
// plus "_" and a random UUID (what kube-scheduler and
// kube-controller-manager use), so two instances on one host differ.
func (le LeaderElection) ID() string {
	if le.Identity != "" {
		return le.Identity
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return host + "_" + string(uuid.NewUUID())
}

// ErrLeaseLost is what Campaign.Run returns when this instance stopped
// holding the Lease while it was meant to go on. The process should exit
// with an error, as kube-scheduler and kube-controller-manager do, and be
// restarted (systemd's Restart=on-failure): a fresh process campaigns
// again with empty caches instead of acting on state it may have missed.
var ErrLeaseLost = errors.New("leader election lost")

// Campaign runs a role's work while this instance holds the role's Lease.
type Campaign struct {
	Config LeaderElection
	// Client reaches the Lease; unused when leader election is off.
	Client kubernetes.Interface
	// Identity names this instance in the Lease; Config.ID() when empty.
	Identity string
	Log      *slog.Logger
	// Lead does the role's work until its context ends: when Run's
	// context ends or the Lease is lost. When it returns on its own, the
	// campaign ends: the Lease is released and Run returns its error.
	Lead func(ctx context.Context) error
}

// Run campaigns until ctx ends, calling Lead once, when the Lease is
// acquired; with leader election off it calls Lead at once. On a
// cancelled ctx it first waits for Lead to return and only then releases
// the Lease, so no two instances ever act at once, and returns nil. It
// returns ErrLeaseLost when the Lease was lost while ctx was live, or
// Lead's own result when Lead returned by itself. It never campaigns a
// second time.
func (c Campaign) Run(ctx context.Context) error {
	if !c.Config.Enabled {
		return c.Lead(ctx)
	}
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id := c.Identity
	if id == "" {
		id = c.Config.ID()
	}
	le := c.Config

	// The elector has its own context, cancelled only once Lead has
	// returned: ReleaseOnCancel then gives the Lease up when nothing acts
	// under it any more.
	electCtx, cancelElect := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelElect()

	var (
		mu       sync.Mutex
		closed   bool // no Lead may start any more
		leading  sync.WaitGroup
		ended    bool // Lead returned by itself
		leadErr  error
		stopLead = func() { // returns once no Lead runs or will
			mu.Lock()
			closed = true
			mu.Unlock()
			leading.Wait()
		}
	)
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: le.LeaseName, Namespace: le.Namespace},
			Client:     c.Client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration:   le.LeaseDuration,
		RenewDeadline:   le.RenewDeadline,
		RetryPeriod:     le.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            le.Namespace + "/" + le.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				mu.Lock()
				if closed {
					mu.Unlock()
					return
				}
				leading.Add(1)
				mu.Unlock()
				defer leading.Done()
				log.Info("leading", "lease", le.Namespace+"/"+le.LeaseName, "identity", id)
				// Stop on a lost Lease or on shutdown, whichever first.
				wctx, cancel := context.WithCancel(lctx)
				defer cancel()
				stop := context.AfterFunc(ctx, cancel)
				defer stop()
				err := c.Lead(wctx)
				if lctx.Err() == nil && ctx.Err() == nil {
					mu.Lock()
					ended, leadErr = true, err
					mu.Unlock()
					cancelElect()
				}
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(who string) {
				if who != id {
					log.Info("standing by", "lease", le.Namespace+"/"+le.LeaseName, "leader", who)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}

	// On shutdown: stop Lead first, then let the elector release.
	shutdownDone := make(chan struct{})
	stopShutdown := context.AfterFunc(ctx, func() {
		defer close(shutdownDone)
		stopLead()
		cancelElect()
	})
	elector.Run(electCtx) // until released after shutdown, lost, or Lead ended
	if stopShutdown() {
		close(shutdownDone) // ctx is live: the lease was lost or Lead ended
	}
	<-shutdownDone
	stopLead()

	mu.Lock()
	defer mu.Unlock()
	switch {
	case ended:
		return leadErr
	case ctx.Err() != nil:
		return nil
	default:
		log.Error("lost the Lease", "lease", le.Namespace+"/"+le.LeaseName, "identity", id)
		return ErrLeaseLost
	}
}
